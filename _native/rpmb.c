/*
 * RPMB frame packing and authentication.  Layout and MAC coverage follow
 * /work/shared/spec/rpmb.md section 1 (the kernel's struct rpmb_frame in
 * include/linux/rpmb.h describes the same 512 bytes with __be fields).
 */
#include "rpmb.h"

#include "hmac.h"

#include <string.h>

static inline void kt_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void kt_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint16_t kt_get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t kt_get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void kt_rpmb_pack(uint8_t *frame, const struct kt_rpmb_fields *f)
{
    kt_put_be32(frame + KT_RPMB_OFF_COUNTER, f->counter);
    kt_put_be16(frame + KT_RPMB_OFF_ADDRESS, f->address);
    kt_put_be16(frame + KT_RPMB_OFF_BLOCK_COUNT, f->block_count);
    kt_put_be16(frame + KT_RPMB_OFF_RESULT, f->result);
    kt_put_be16(frame + KT_RPMB_OFF_TYPE, f->type);
}

void kt_rpmb_unpack(const uint8_t *frame, struct kt_rpmb_fields *f)
{
    f->counter = kt_get_be32(frame + KT_RPMB_OFF_COUNTER);
    f->address = kt_get_be16(frame + KT_RPMB_OFF_ADDRESS);
    f->block_count = kt_get_be16(frame + KT_RPMB_OFF_BLOCK_COUNT);
    f->result = kt_get_be16(frame + KT_RPMB_OFF_RESULT);
    f->type = kt_get_be16(frame + KT_RPMB_OFF_TYPE);
}

void kt_rpmb_fill(uint8_t *buf, size_t n, const struct kt_rpmb_fields *f,
                  const uint8_t *nonce, const uint8_t *data, const uint8_t *key_mac)
{
    /* Stuff bytes and unused fields are zero in what hosts send (spec 1.3, 1.7). */
    memset(buf, 0, n * KT_RPMB_FRAME_SIZE);
    for (size_t i = 0; i < n; i++) {
        uint8_t *fr = buf + i * KT_RPMB_FRAME_SIZE;
        if (data)
            memcpy(fr + KT_RPMB_OFF_DATA, data + i * KT_RPMB_DATA_LEN, KT_RPMB_DATA_LEN);
        if (nonce)
            memcpy(fr + KT_RPMB_OFF_NONCE, nonce, KT_RPMB_NONCE_LEN);
        kt_rpmb_pack(fr, f);
    }
    if (key_mac && n)
        memcpy(buf + (n - 1) * KT_RPMB_FRAME_SIZE + KT_RPMB_OFF_KEY_MAC, key_mac,
               KT_RPMB_KEY_MAC_LEN);
}

void kt_rpmb_sign(const void *hmac_state, uint8_t *buf, size_t n)
{
    uint8_t mac[KT_HMAC_LEN];

    if (!n)
        return;
    kt_hmac_mac_strided(hmac_state, buf + KT_RPMB_OFF_DATA, n, KT_RPMB_FRAME_SIZE,
                        KT_RPMB_MAC_INPUT_LEN, mac);
    memcpy(buf + (n - 1) * KT_RPMB_FRAME_SIZE + KT_RPMB_OFF_KEY_MAC, mac, KT_HMAC_LEN);
}

void kt_rpmb_sign_each(const void *hmac_state, uint8_t *buf, size_t n)
{
    /* The MAC field (196..227) lies outside the covered bytes (228..511), so
     * writing each tag in place cannot disturb a later frame's input. */
    kt_hmac_batch(hmac_state, buf + KT_RPMB_OFF_DATA, n, KT_RPMB_FRAME_SIZE,
                  KT_RPMB_MAC_INPUT_LEN, buf + KT_RPMB_OFF_KEY_MAC, KT_RPMB_FRAME_SIZE);
}

/* 1 when the MAC differs, else 0; constant time in the frame contents. */
static int kt_rpmb_mac_differs(const void *hmac_state, const uint8_t *buf, size_t n)
{
    uint8_t mac[KT_HMAC_LEN];
    int differ;

    if (!n)
        return 1;
    kt_hmac_mac_strided(hmac_state, buf + KT_RPMB_OFF_DATA, n, KT_RPMB_FRAME_SIZE,
                        KT_RPMB_MAC_INPUT_LEN, mac);
    differ = kt_hmac_ct_differ(mac, buf + (n - 1) * KT_RPMB_FRAME_SIZE + KT_RPMB_OFF_KEY_MAC,
                               KT_HMAC_LEN);
    /* The right MAC for a forged frame would help the forger. */
    memset(mac, 0, sizeof(mac));
    __asm__ __volatile__("" : : "r"(mac) : "memory");
    return differ;
}

int kt_rpmb_verify(const void *hmac_state, const uint8_t *buf, size_t n)
{
    return 1 - kt_rpmb_mac_differs(hmac_state, buf, n);
}

/* All-ones when a != b, else 0, without a branch. */
static inline uint32_t kt_mask_ne(uint32_t a, uint32_t b)
{
    uint64_t d = (uint64_t)(a ^ b);
    return (uint32_t)0 - (uint32_t)((d + 0xffffffffu) >> 32);
}

uint32_t kt_rpmb_check(const void *hmac_state, const uint8_t *buf, size_t n,
                       const struct kt_rpmb_expect *e)
{
    uint32_t failed = 0;
    uint32_t bad_type = 0;
    const uint8_t *last;
    struct kt_rpmb_fields f;

    if (!n)
        return e->checks | KT_RPMB_CHECK_TYPE;
    last = buf + (n - 1) * KT_RPMB_FRAME_SIZE;
    kt_rpmb_unpack(last, &f);

    if (e->checks & KT_RPMB_CHECK_MAC)
        failed |= (uint32_t)kt_rpmb_mac_differs(hmac_state, buf, n) * KT_RPMB_CHECK_MAC;
    for (size_t i = 0; i < n; i++)
        bad_type |= kt_mask_ne(kt_get_be16(buf + i * KT_RPMB_FRAME_SIZE + KT_RPMB_OFF_TYPE),
                               e->type);
    failed |= bad_type & KT_RPMB_CHECK_TYPE;
    if (e->checks & KT_RPMB_CHECK_NONCE)
        failed |= (uint32_t)kt_hmac_ct_differ(last + KT_RPMB_OFF_NONCE, e->nonce,
                                              KT_RPMB_NONCE_LEN) *
                  KT_RPMB_CHECK_NONCE;
    if (e->checks & KT_RPMB_CHECK_COUNTER)
        failed |= kt_mask_ne(f.counter, e->counter) & KT_RPMB_CHECK_COUNTER;
    if (e->checks & KT_RPMB_CHECK_ADDRESS)
        failed |= kt_mask_ne(f.address, e->address) & KT_RPMB_CHECK_ADDRESS;
    if (e->checks & KT_RPMB_CHECK_BLOCK_COUNT)
        failed |= kt_mask_ne(f.block_count, e->block_count) & KT_RPMB_CHECK_BLOCK_COUNT;
    if (e->checks & KT_RPMB_CHECK_RESULT)
        /* Only the low 7 bits carry the code; 0x80 flags an expired counter
         * and rides on an OK result (spec 1.5, 1.9). */
        failed |= kt_mask_ne(f.result & 0x7fu, 0) & KT_RPMB_CHECK_RESULT;
    return failed;
}

uint32_t kt_rpmb_check_args(const void *hmac_state, const char *buf, size_t n, uint32_t checks,
                            uint16_t type, const char *nonce, uint32_t counter, uint16_t address,
                            uint16_t block_count)
{
    struct kt_rpmb_expect e;

    e.checks = checks;
    e.type = type;
    e.counter = counter;
    e.address = address;
    e.block_count = block_count;
    if (nonce)
        memcpy(e.nonce, nonce, KT_RPMB_NONCE_LEN);
    else
        memset(e.nonce, 0, KT_RPMB_NONCE_LEN);
    return kt_rpmb_check(hmac_state, (const uint8_t *)buf, n, &e);
}
