/*
 * eMMC/UFS/virtio RPMB data frames (512 bytes, big-endian fields) and their
 * HMAC-SHA256 authentication.  Offsets are memory offsets into the frame as
 * transferred (JEDEC numbers the same bytes from the other end); see
 * /work/shared/spec/rpmb.md section 1.1 and docs/rpmb.md.
 */
#ifndef KT_RPMB_H
#define KT_RPMB_H
#include <stddef.h>
#include <stdint.h>

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
/* The MAC covers bytes 228..511 of every frame. */
#define KT_RPMB_MAC_INPUT_LEN (KT_RPMB_FRAME_SIZE - KT_RPMB_OFF_DATA)

/* The integer fields of one frame, host byte order. */
struct kt_rpmb_fields {
    uint32_t counter;
    uint16_t address;
    uint16_t block_count;
    uint16_t result;
    uint16_t type;
};

/* Which checks kt_rpmb_check applies (flags) and which failed (return value). */
#define KT_RPMB_CHECK_MAC 0x01u
#define KT_RPMB_CHECK_TYPE 0x02u
#define KT_RPMB_CHECK_NONCE 0x04u
#define KT_RPMB_CHECK_COUNTER 0x08u
#define KT_RPMB_CHECK_ADDRESS 0x10u
#define KT_RPMB_CHECK_BLOCK_COUNT 0x20u
#define KT_RPMB_CHECK_RESULT 0x40u

struct kt_rpmb_expect {
    uint32_t checks; /* KT_RPMB_CHECK_* bits */
    uint32_t counter;
    uint16_t type;
    uint16_t address;
    uint16_t block_count;
    uint8_t nonce[KT_RPMB_NONCE_LEN];
};

/* Zero n frames, then give each the same fields and, where given, the same
 * nonce, data block i (data: n * 256 bytes) and, in the last frame only,
 * key_mac (32 bytes).  NULL pointers leave those bytes zero. */
void kt_rpmb_fill(uint8_t *buf, size_t n, const struct kt_rpmb_fields *f,
                  const uint8_t *nonce, const uint8_t *data, const uint8_t *key_mac);
void kt_rpmb_unpack(const uint8_t *frame, struct kt_rpmb_fields *f);
void kt_rpmb_pack(uint8_t *frame, const struct kt_rpmb_fields *f);
/* One MAC over bytes 228..511 of frames 0..n-1 in order, written into the
 * key/MAC field of the last frame. */
void kt_rpmb_sign(const void *hmac_state, uint8_t *buf, size_t n);
/* Each of the n frames gets its own MAC (n independent single-frame messages). */
void kt_rpmb_sign_each(const void *hmac_state, uint8_t *buf, size_t n);
/* 1 when the last frame's MAC authenticates all n frames, else 0; constant time. */
int kt_rpmb_verify(const void *hmac_state, const uint8_t *buf, size_t n);
/* Apply every requested check, without early exit, and return the bits of
 * those that failed (0 = all passed).  MAC and nonce compare in constant time.
 * TYPE is checked on every frame; the other fields on the last frame, which
 * carries the MAC (as hosts do, spec 1.6). */
uint32_t kt_rpmb_check(const void *hmac_state, const uint8_t *buf, size_t n,
                       const struct kt_rpmb_expect *e);
/* kt_rpmb_check with the expectation as arguments: a Python caller fills no
 * struct (each field set from Python costs more than the comparison).  nonce
 * may be NULL when checks has no KT_RPMB_CHECK_NONCE. */
uint32_t kt_rpmb_check_args(const void *hmac_state, const char *buf, size_t n, uint32_t checks,
                            uint16_t type, const char *nonce, uint32_t counter, uint16_t address,
                            uint16_t block_count);

#endif
