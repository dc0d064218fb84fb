"""cffi build script for ``keyring_types.bindings._hmac``: HMAC-SHA256 with
precomputed pads and RPMB frame packing/authentication, over OpenSSL's libcrypto."""


from cffi import FFI


ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define KT_HMAC_LEN 32
    #define KT_HMAC_BLOCK 64
    size_t kt_hmac_state_size(void);
    int kt_hmac_init(void *state, const uint8_t *key, size_t keylen);
    void kt_hmac_mac(const void *state, const uint8_t *msg, size_t len, uint8_t *out);
    void kt_hmac_mac_parts(const void *state, const uint8_t *const *parts, const size_t *lens,
                           size_t n, uint8_t *out);
    void kt_hmac_mac_strided(const void *state, const uint8_t *base, size_t n, size_t stride,
                             size_t len, uint8_t *out);
    void kt_hmac_batch(const void *state, const uint8_t *base, size_t n, size_t in_stride,
                       size_t len, uint8_t *out, size_t out_stride);
    int kt_hmac_batch_lanes(int lanes);
    int kt_hmac_verify(const void *state, const uint8_t *msg, size_t len, const uint8_t *tag);
    int kt_hmac_ct_differ(const uint8_t *a, const uint8_t *b, size_t n);

    #define KT_RPMB_FRAME_SIZE 512
    #define KT_RPMB_OFF_KEY_MAC 196
    #define KT_RPMB_OFF_DATA 228
    #define KT_RPMB_OFF_NONCE 484
    #define KT_RPMB_OFF_COUNTER 500
    #define KT_RPMB_OFF_ADDRESS 504
    #define KT_RPMB_OFF_BLOCK_COUNT 506
    #define KT_RPMB_OFF_RESULT 508
    #define KT_RPMB_OFF_TYPE 510
    #define KT_RPMB_KEY_MAC_LEN 32
    #define KT_RPMB_DATA_LEN 256
    #define KT_RPMB_NONCE_LEN 16
    #define KT_RPMB_MAC_INPUT_LEN 284
    #define KT_RPMB_CHECK_MAC 0x01
    #define KT_RPMB_CHECK_TYPE 0x02
    #define KT_RPMB_CHECK_NONCE 0x04
    #define KT_RPMB_CHECK_COUNTER 0x08
    #define KT_RPMB_CHECK_ADDRESS 0x10
    #define KT_RPMB_CHECK_BLOCK_COUNT 0x20
    #define KT_RPMB_CHECK_RESULT 0x40
    struct kt_rpmb_fields {
        uint32_t counter;
        uint16_t address;
        uint16_t block_count;
        uint16_t result;
        uint16_t type;
    };
    struct kt_rpmb_expect {
        uint32_t checks;
        uint32_t counter;
        uint16_t type;
        uint16_t address;
        uint16_t block_count;
        uint8_t nonce[16];
    };
    void kt_rpmb_fill(uint8_t *buf, size_t n, const struct kt_rpmb_fields *f,
                      const uint8_t *nonce, const uint8_t *data, const uint8_t *key_mac);
    void kt_rpmb_unpack(const uint8_t *frame, struct kt_rpmb_fields *f);
    void kt_rpmb_pack(uint8_t *frame, const struct kt_rpmb_fields *f);
    void kt_rpmb_sign(const void *hmac_state, uint8_t *buf, size_t n);
    void kt_rpmb_sign_each(const void *hmac_state, uint8_t *buf, size_t n);
    int kt_rpmb_verify(const void *hmac_state, const uint8_t *buf, size_t n);
    uint32_t kt_rpmb_check(const void *hmac_state, const uint8_t *buf, size_t n,
                           const struct kt_rpmb_expect *e);
    """
)
ffibuilder.set_source(
    "keyring_types.bindings._hmac",
    '#include "hmac.h"\n#include "rpmb.h"',
    sources=["_native/hmac.c", "_native/rpmb.c"],
    include_dirs=["_native"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["crypto"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
