"""cffi build script for ``keyring_types.bindings._encrypted``: one-shot seal and
unseal of the kernel's ``encrypted`` key blob over OpenSSL's libcrypto."""


from cffi import FFI


ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define KT_ENC_IV_SIZE 16
    #define KT_ENC_HASH_SIZE 32
    #define KT_ENC_BLOCK 16
    #define KT_ENC_MAX_DATA 4096
    #define KT_ENC_OK 0
    #define KT_ENC_ERR_CRYPTO -1
    #define KT_ENC_ERR_MAC -2
    #define KT_ENC_ERR_SIZE -3
    size_t kt_enc_padded_len(size_t datalen);
    size_t kt_enc_export_len(size_t hlen, size_t datalen);
    int kt_enc_seal(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                    const uint8_t *iv, const uint8_t *data, size_t datalen,
                    uint8_t *ct_out, uint8_t *mac_out);
    int kt_enc_seal_export(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                           const uint8_t *iv, const uint8_t *data, size_t datalen, uint8_t *out);
    int kt_enc_unseal(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                      const uint8_t *iv, const uint8_t *ct, const uint8_t *mac, size_t datalen,
                      uint8_t *plain_out);
    int kt_enc_random(uint8_t *out, size_t n);
    """
)
ffibuilder.set_source(
    "keyring_types.bindings._encrypted",
    '#include "encrypted.h"',
    sources=["_native/encrypted.c"],
    include_dirs=["_native"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["crypto", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
