/*
 * HMAC-SHA256 with the key's inner and outer pads absorbed once.
 *
 * HMAC(K, m) = H((K0 ^ opad) || H((K0 ^ ipad) || m)).  Both padded key blocks
 * are exactly one SHA-256 block, so the state after compressing each of them
 * (a "midstate") is all a MAC needs from the key: every MAC then copies the
 * inner midstate, absorbs the message, and finishes with one compression on a
 * copy of the outer midstate.
 *
 * We use OpenSSL's low-level SHA256_* functions rather than EVP: they are
 * deprecated in OpenSSL 3 but still exported, reach the same SHA-NI block
 * code, and skip EVP's per-call dispatch.  Measured on the reference machine
 * for one 284-byte MAC with precomputed pads: SHA256_CTX copy ~340-380 ns,
 * EVP_MD_CTX_copy_ex ~390-520 ns, EVP_MAC_init(NULL key) ~460-640 ns.
 */
/* Deliberate use of the deprecated low-level SHA-256 API (speed, see above). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "hmac.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <string.h>

struct kt_hmac_state {
    SHA256_CTX inner; /* after compressing K0 ^ ipad */
    SHA256_CTX outer; /* after compressing K0 ^ opad */
};

size_t kt_hmac_state_size(void)
{
    return sizeof(struct kt_hmac_state);
}

int kt_hmac_init(void *state, const uint8_t *key, size_t keylen)
{
    struct kt_hmac_state *st = state;
    uint8_t k0[KT_HMAC_BLOCK];
    uint8_t pad[KT_HMAC_BLOCK];
    SHA256_CTX tmp;
    int ok = 1;

    memset(k0, 0, sizeof(k0));
    if (keylen > KT_HMAC_BLOCK) {
        /* RFC 2104: keys longer than the block are hashed first. */
        ok &= SHA256_Init(&tmp);
        ok &= SHA256_Update(&tmp, key, keylen);
        ok &= SHA256_Final(k0, &tmp);
    } else if (keylen) {
        memcpy(k0, key, keylen);
    }
    for (size_t i = 0; i < KT_HMAC_BLOCK; i++)
        pad[i] = k0[i] ^ 0x36;
    ok &= SHA256_Init(&st->inner);
    ok &= SHA256_Update(&st->inner, pad, KT_HMAC_BLOCK);
    for (size_t i = 0; i < KT_HMAC_BLOCK; i++)
        pad[i] = k0[i] ^ 0x5c;
    ok &= SHA256_Init(&st->outer);
    ok &= SHA256_Update(&st->outer, pad, KT_HMAC_BLOCK);

    /* The stack copies are as secret as the key. */
    OPENSSL_cleanse(k0, sizeof(k0));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(&tmp, sizeof(tmp));
    if (!ok) {
        OPENSSL_cleanse(st, sizeof(*st));
        return -1;
    }
    return 0;
}

static inline void kt_store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void kt_store_be64(uint8_t *p, uint64_t v)
{
    kt_store_be32(p, (uint32_t)(v >> 32));
    kt_store_be32(p + 4, (uint32_t)v);
}

/* Lay out the final one or two padded blocks of an inner message of len
 * bytes (after the 64-byte key block); returns how many blocks. */
static inline size_t kt_inner_tail(uint8_t *tail, const uint8_t *msg, size_t len)
{
    size_t full = len & ~(size_t)(KT_HMAC_BLOCK - 1);
    size_t r = len - full;
    size_t tl = r < KT_HMAC_BLOCK - 8 ? KT_HMAC_BLOCK : 2 * KT_HMAC_BLOCK;

    memcpy(tail, msg + full, r);
    tail[r] = 0x80;
    memset(tail + r + 1, 0, tl - r - 1 - 8);
    /* The key block counts towards the inner message length. */
    kt_store_be64(tail + tl - 8, ((uint64_t)len + KT_HMAC_BLOCK) * 8);
    return tl / KT_HMAC_BLOCK;
}

/* Fill in the outer block after the digest already in its first 32 bytes. */
static inline void kt_outer_pad(uint8_t *blk)
{
    blk[32] = 0x80;
    memset(blk + 33, 0, KT_HMAC_BLOCK - 33 - 2);
    blk[62] = 0x03; /* (64 + 32) * 8 = 768 = 0x0300 bits */
    blk[63] = 0x00;
}

/*
 * Run the outer hash over the inner digest, which the caller has left in the
 * first 32 bytes of blk.  The outer message is always 32 bytes after a 64-byte
 * key block, so its padding is fixed: digest || 0x80 || zeros || bit length
 * 768.  Compressing that block directly with SHA256_Transform skips
 * SHA256_Update/Final's buffering.
 */
static inline void kt_outer(const struct kt_hmac_state *st, SHA256_CTX *c, uint8_t *blk,
                            uint8_t *out)
{
    kt_outer_pad(blk);
    *c = st->outer;
    SHA256_Transform(c, blk);
    for (int i = 0; i < 8; i++)
        kt_store_be32(out + 4 * i, c->h[i]);
}

/* Finish a streamed inner hash in c (any length absorbed) and run the outer one. */
static inline void kt_finish(const struct kt_hmac_state *st, SHA256_CTX *c, uint8_t *out)
{
    uint8_t blk[KT_HMAC_BLOCK];

    SHA256_Final(blk, c);
    kt_outer(st, c, blk, out);
}

/*
 * MAC of one contiguous message.  Whole blocks go straight to the block
 * function (SHA256_Update with an empty buffer does not copy them); the tail
 * and its padding are laid out here so no SHA256_Final buffering is needed.
 */
static inline void kt_mac_one(const struct kt_hmac_state *st, SHA256_CTX *c,
                              const uint8_t *msg, size_t len, uint8_t *out)
{
    uint8_t tail[2 * KT_HMAC_BLOCK];
    size_t full = len & ~(size_t)(KT_HMAC_BLOCK - 1);
    size_t nt;

    *c = st->inner;
    if (full)
        SHA256_Update(c, msg, full);
    nt = kt_inner_tail(tail, msg, len);
    for (size_t i = 0; i < nt; i++)
        SHA256_Transform(c, tail + i * KT_HMAC_BLOCK);
    for (int i = 0; i < 8; i++)
        kt_store_be32(tail + 4 * i, c->h[i]);
    kt_outer(st, c, tail, out);
}

void kt_hmac_mac(const void *state, const uint8_t *msg, size_t len, uint8_t *out)
{
    SHA256_CTX c;

    kt_mac_one(state, &c, msg, len, out);
    /* The midstate copy is key material. */
    OPENSSL_cleanse(&c, sizeof(c));
}

void kt_hmac_mac_parts(const void *state, const uint8_t *const *parts, const size_t *lens,
                       size_t n, uint8_t *out)
{
    const struct kt_hmac_state *st = state;
    SHA256_CTX c = st->inner;

    for (size_t i = 0; i < n; i++)
        SHA256_Update(&c, parts[i], lens[i]);
    kt_finish(st, &c, out);
    OPENSSL_cleanse(&c, sizeof(c));
}

/*
 * The regions are copied into a 4 KiB buffer and hashed a buffer at a time.
 * Fed to SHA256_Update one by one, each 284-byte RPMB region costs two block
 * function calls (the block completing the buffered partial one, then the
 * whole blocks), each reloading the chaining value; gathered, a call hashes
 * 64 blocks.  Measured on the reference machine for a 64-frame write, old
 * and new alternating in one process: 1-2.5 % less time (median of 41
 * pairs), the 18 KiB of copies included.
 */
#define KT_GATHER 4096

void kt_hmac_mac_strided(const void *state, const uint8_t *base, size_t n, size_t stride,
                         size_t len, uint8_t *out)
{
    const struct kt_hmac_state *st = state;
    SHA256_CTX c = st->inner;
    uint8_t buf[KT_GATHER] __attribute__((aligned(64)));
    size_t fill = 0, used = 0;

    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = base + i * stride;
        size_t left = len;

        while (left) {
            size_t k = KT_GATHER - fill < left ? KT_GATHER - fill : left;

            memcpy(buf + fill, p, k);
            fill += k;
            p += k;
            left -= k;
            if (fill == KT_GATHER) {
                SHA256_Update(&c, buf, KT_GATHER);
                used = KT_GATHER;
                fill = 0;
            }
        }
    }
    if (fill)
        SHA256_Update(&c, buf, fill);
    kt_finish(st, &c, out);
    OPENSSL_cleanse(&c, sizeof(c));
    /* Like libcrypto's own block buffer, the copies of the message do not
     * outlive the call. */
    OPENSSL_cleanse(buf, used > fill ? used : fill);
}

#if defined(__x86_64__)
/*
 * Batch kernels.  A batch holds independent messages of one length, so they
 * can be hashed side by side instead of one after another:
 *
 * - two-lane SHA-NI: two messages go through SHA256RNDS2 interleaved, the
 *   bookkeeping stays in registers instead of SHA256_CTX copies (5-15 %
 *   faster per 284-byte MAC than libcrypto one at a time on the reference
 *   machine);
 * - sixteen-lane AVX-512 (below): ~2x the two-lane kernel there (about
 *   110 ns per 284-byte MAC against 237 ns).
 *
 * OpenSSL has an internal multi-buffer SHA-256 for TLS records but does not
 * export it, hence these small kernels written from FIPS 180-4 and the
 * instruction definitions in the Intel SDM.  Single MACs, multi-part and
 * multi-frame MACs, and CPUs without these extensions use libcrypto.  The
 * tests compare every kernel against `cryptography`.
 */
#include <cpuid.h>
#include <immintrin.h>

#define KT_SHANI __attribute__((target("sha,ssse3,sse4.1")))

/* FIPS 180-4 section 4.2.2: the SHA-256 round constants. */
static const uint32_t kt_k256[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

/* A chaining value in the two registers SHA256RNDS2 works on:
 * abef = {F, E, B, A} and cdgh = {H, G, D, C} (dword 0 first). */
struct kt_lane {
    __m128i abef;
    __m128i cdgh;
};

KT_SHANI static inline void kt_lane_load(struct kt_lane *l, const uint32_t h[8])
{
    __m128i lo = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0x1b);       /* D C B A */
    __m128i hi = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1b); /* H G F E */
    l->abef = _mm_unpackhi_epi64(hi, lo);
    l->cdgh = _mm_unpacklo_epi64(hi, lo);
}

/* Write the chaining value as the big-endian digest bytes. */
KT_SHANI static inline void kt_lane_digest(const struct kt_lane *l, uint8_t *out)
{
    const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i ab_ef = _mm_shuffle_epi32(l->abef, 0x1b); /* A B E F */
    __m128i cd_gh = _mm_shuffle_epi32(l->cdgh, 0x1b); /* C D G H */
    _mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(_mm_unpacklo_epi64(ab_ef, cd_gh), bswap));
    _mm_storeu_si128((__m128i *)(out + 16),
                     _mm_shuffle_epi8(_mm_unpackhi_epi64(ab_ef, cd_gh), bswap));
}

/* W[t..t+3] from the previous sixteen words held in m[0..3] (oldest first). */
#define KT_SCHEDULE(m, g)                                                                     \
    (m)[(g) & 3] = _mm_sha256msg2_epu32(                                                      \
        _mm_add_epi32(_mm_sha256msg1_epu32((m)[(g) & 3], (m)[((g) + 1) & 3]),                 \
                      _mm_alignr_epi8((m)[((g) + 3) & 3], (m)[((g) + 2) & 3], 4)),             \
        (m)[((g) + 3) & 3])

/* Compress one 64-byte block into each of two independent lanes. */
KT_SHANI static inline void kt_shani_x2(struct kt_lane *x, struct kt_lane *y, const uint8_t *bx,
                                        const uint8_t *by)
{
    const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    /* Work on locals: going through *x and *y would put a store and reload on
     * the round dependency chain. */
    __m128i xa = x->abef, xc = x->cdgh, ya = y->abef, yc = y->cdgh;
    __m128i mx[4], my[4];

    for (int i = 0; i < 4; i++) {
        mx[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(bx + 16 * i)), bswap);
        my[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(by + 16 * i)), bswap);
    }
#pragma GCC unroll 16
    for (int g = 0; g < 16; g++) {
        const __m128i k = _mm_load_si128((const __m128i *)(kt_k256 + 4 * g));
        __m128i wx, wy;
        if (g >= 4) {
            KT_SCHEDULE(mx, g);
            KT_SCHEDULE(my, g);
        }
        wx = _mm_add_epi32(mx[g & 3], k);
        wy = _mm_add_epi32(my[g & 3], k);
        /* Two rounds with W+K in the low half, two with the high half; the
         * register roles swap each time, so after four rounds they are back. */
        xc = _mm_sha256rnds2_epu32(xc, xa, wx);
        yc = _mm_sha256rnds2_epu32(yc, ya, wy);
        wx = _mm_shuffle_epi32(wx, 0x0e);
        wy = _mm_shuffle_epi32(wy, 0x0e);
        xa = _mm_sha256rnds2_epu32(xa, xc, wx);
        ya = _mm_sha256rnds2_epu32(ya, yc, wy);
    }
    x->abef = _mm_add_epi32(xa, x->abef);
    x->cdgh = _mm_add_epi32(xc, x->cdgh);
    y->abef = _mm_add_epi32(ya, y->abef);
    y->cdgh = _mm_add_epi32(yc, y->cdgh);
}

/* HMACs of two equal-length messages, interleaved. */
KT_SHANI static void kt_mac_x2(const struct kt_hmac_state *st, const uint8_t *m0,
                               const uint8_t *m1, size_t len, uint8_t *o0, uint8_t *o1)
{
    struct kt_lane a, b;
    uint8_t t0[2 * KT_HMAC_BLOCK], t1[2 * KT_HMAC_BLOCK];
    size_t full = len / KT_HMAC_BLOCK, nt;

    kt_lane_load(&a, st->inner.h);
    b = a;
    for (size_t i = 0; i < full; i++)
        kt_shani_x2(&a, &b, m0 + i * KT_HMAC_BLOCK, m1 + i * KT_HMAC_BLOCK);
    nt = kt_inner_tail(t0, m0, len);
    kt_inner_tail(t1, m1, len);
    for (size_t i = 0; i < nt; i++)
        kt_shani_x2(&a, &b, t0 + i * KT_HMAC_BLOCK, t1 + i * KT_HMAC_BLOCK);
    kt_lane_digest(&a, t0);
    kt_lane_digest(&b, t1);
    kt_outer_pad(t0);
    kt_outer_pad(t1);
    kt_lane_load(&a, st->outer.h);
    b = a;
    kt_shani_x2(&a, &b, t0, t1);
    kt_lane_digest(&a, o0);
    kt_lane_digest(&b, o1);
    /* The lanes held key-derived midstates. */
    OPENSSL_cleanse(&a, sizeof(a));
    OPENSSL_cleanse(&b, sizeof(b));
}

/*
 * Sixteen-lane AVX-512 SHA-256 for batches.
 *
 * The SHA extensions run one compression at a time per core; AVX-512 holds
 * one 32-bit word of sixteen independent messages in each register and runs
 * the plain FIPS 180-4 round function on all of them at once (rotates and
 * three-input logic map onto VPRORD and VPTERNLOGD).  For short equal-length
 * messages such as RPMB's 284-byte MAC input this does more compressions per
 * cycle than SHA256RNDS2 does.
 *
 * Where the time goes (measured on the reference machine, an AVX-512 Xeon
 * VM): a block is ~1624 vector operations for sixteen lanes (64 rounds of
 * 17, 48 schedule steps of 11).  Rotates and shifts only issue on one port,
 * adds and VPTERNLOGD on two, so the floor is ~812 cycles per block; the
 * block alone measures ~850, i.e. ~18 ns per lane and block, ~108 ns for
 * the six compressions of a 284-byte MAC.  Everything else (loads and
 * transposes, padding, the outer block's set-up, storing tags) is hidden
 * inside the rounds or amortised over the batch.  Going further needs fewer
 * compressions' worth of vector work per MAC.  SHA256RNDS2 for extra
 * messages in the shadow of the AVX-512 rounds does not provide it: with the
 * rounds compiled to keep out of zmm0-15 (-ffixed-xmm0..15, so that the
 * legacy-SSE SHA instructions see clean upper halves), each SHA-NI block
 * interleaved with a sixteen-lane block added ~50 ns to it, against ~18 ns
 * per AVX-512 lane.  Here SHA256RNDS2 issues once per 3 cycles with a
 * latency of 4, and the SHA-NI bookkeeping competes for the same two ports.
 */
#define KT_AVX512 __attribute__((target("avx512f,avx512bw")))

#define KT_ROR(x, n) _mm512_ror_epi32((x), (n))
/* VPTERNLOGD truth tables: 0x96 = a^b^c, 0xca = a?b:c, 0xe8 = majority. */
#define KT_XOR3(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0x96)
#define KT_BSIG0(x) KT_XOR3(KT_ROR(x, 2), KT_ROR(x, 13), KT_ROR(x, 22))
#define KT_BSIG1(x) KT_XOR3(KT_ROR(x, 6), KT_ROR(x, 11), KT_ROR(x, 25))
#define KT_SSIG0(x) KT_XOR3(KT_ROR(x, 7), KT_ROR(x, 18), _mm512_srli_epi32((x), 3))
#define KT_SSIG1(x) KT_XOR3(KT_ROR(x, 17), KT_ROR(x, 19), _mm512_srli_epi32((x), 10))
#define KT_CH(e, f, g) _mm512_ternarylogic_epi32((e), (f), (g), 0xca)
#define KT_MAJ(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0xe8)

/* Byte-swap each 32-bit word: SHA-256 words are big-endian. */
#define KT_BSWAP32X16(v)                                                                          \
    _mm512_shuffle_epi8((v), _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203))

/*
 * Where the next block of sixteen lanes comes from: row j (lane j's 64
 * bytes) at p + j*stride.  For the padded tail of the inner message (tail =
 * 1) only the bytes in mask are read and pad, the same for every lane, is
 * ORed in; see kt_mac_x16.
 */
struct kt_x16_src {
    const uint8_t *p;
    size_t stride;
    int tail;
    __mmask64 mask;
    __m512i pad;
};

/*
 * The 16x16 transpose of 32-bit words that turns rows (one lane's block
 * each) into w[i] = word i of every lane, in two halves so that it can run
 * inside the rounds of the block before (kt_x16_block).  Sixty-four shuffles
 * and sixteen byte swaps, measured cheaper here than sixteen VPGATHERDDs.
 *
 * First half, one call per group m of four rows: byte-swap them and
 * interleave pairs, then quads, within each 128-bit lane.  Afterwards
 * 128-bit lane L of rr[4m+c] holds rows 4m..4m+3 at word 4L+c.
 */
KT_AVX512 static inline void kt_x16_rows4(__m512i rr[16], int m, const struct kt_x16_src *src)
{
    __m512i r[4], t[4];

    for (int j = 0; j < 4; j++) {
        const uint8_t *row = src->p + (size_t)(4 * m + j) * src->stride;
        /* Masked loads do not fault on masked-off bytes, so a tail that
         * ends at a page boundary is read safely. */
        r[j] = src->tail ? _mm512_or_si512(_mm512_maskz_loadu_epi8(src->mask, row), src->pad)
                         : _mm512_loadu_si512((const void *)row);
        r[j] = KT_BSWAP32X16(r[j]);
    }
    t[0] = _mm512_unpacklo_epi32(r[0], r[1]);
    t[1] = _mm512_unpackhi_epi32(r[0], r[1]);
    t[2] = _mm512_unpacklo_epi32(r[2], r[3]);
    t[3] = _mm512_unpackhi_epi32(r[2], r[3]);
    rr[4 * m + 0] = _mm512_unpacklo_epi64(t[0], t[2]);
    rr[4 * m + 1] = _mm512_unpackhi_epi64(t[0], t[2]);
    rr[4 * m + 2] = _mm512_unpacklo_epi64(t[1], t[3]);
    rr[4 * m + 3] = _mm512_unpackhi_epi64(t[1], t[3]);
}

/* Second half, one call per word column c: a 4x4 transpose of 128-bit lanes
 * yields words c, 4+c, 8+c and 12+c of every lane. */
KT_AVX512 static inline void kt_x16_cols4(__m512i w[16], int c, const __m512i rr[16])
{
    __m512i v0 = _mm512_shuffle_i32x4(rr[c], rr[4 + c], 0x44);
    __m512i v1 = _mm512_shuffle_i32x4(rr[c], rr[4 + c], 0xee);
    __m512i v2 = _mm512_shuffle_i32x4(rr[8 + c], rr[12 + c], 0x44);
    __m512i v3 = _mm512_shuffle_i32x4(rr[8 + c], rr[12 + c], 0xee);

    w[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    w[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
    w[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    w[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
}

/* The whole transpose at once, for the first block of a run. */
KT_AVX512 static inline void kt_x16_fetch(__m512i w[16], const struct kt_x16_src *src)
{
    __m512i rr[16];

    for (int m = 0; m < 4; m++)
        kt_x16_rows4(rr, m, src);
    for (int c = 0; c < 4; c++)
        kt_x16_cols4(w, c, rr);
}

/*
 * One block into each of 16 lanes; w holds the block's 16 big-endian-decoded
 * words, word i of lane j in w[i] element j (overwritten by the schedule).
 *
 * When next is not NULL, the next block's words are fetched and transposed
 * into wn during the rounds.  The transpose is all shuffles, which only one
 * port runs, while the rounds keep both vector ports busy; done between two
 * blocks it stalled the rounds of the second (a block is ~1800 instructions,
 * far more than the out-of-order window, so the core cannot overlap them by
 * itself).  Spread over this block's rounds it cost ~46 ns less per sixteen
 * lanes and block on the reference machine.
 */
KT_AVX512 static void kt_x16_block(__m512i s[8], __m512i w[16], const struct kt_x16_src *next,
                                   __m512i wn[16])
{
    __m512i a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    __m512i rr[16];
    /* Hide the table's contents from the optimiser: with them known, GCC
     * materialises every constant through a general register and a
     * VPBROADCASTD (two extra instructions a round, one on the shuffle port
     * the rounds need); read through an opaque pointer it adds the constant
     * straight from memory with an embedded {1to16} broadcast instead. */
    const uint32_t *k = kt_k256;

    __asm__("" : "+r"(k));
#pragma GCC unroll 64
    for (int t = 0; t < 64; t++) {
        __m512i wt, t1, t2;
        if (next && (t & 7) == 4) {
            if (t < 32)
                kt_x16_rows4(rr, t >> 3, next);
            else
                kt_x16_cols4(wn, (t - 32) >> 3, rr);
        }
        if (t < 16) {
            wt = w[t];
        } else {
            wt = _mm512_add_epi32(_mm512_add_epi32(KT_SSIG1(w[(t - 2) & 15]), w[(t - 7) & 15]),
                                  _mm512_add_epi32(KT_SSIG0(w[(t - 15) & 15]), w[t & 15]));
            w[t & 15] = wt;
        }
        t1 = _mm512_add_epi32(_mm512_add_epi32(h, KT_BSIG1(e)),
                              _mm512_add_epi32(KT_CH(e, f, g),
                                               _mm512_add_epi32(wt, _mm512_set1_epi32((int)k[t]))));
        t2 = _mm512_add_epi32(KT_BSIG0(a), KT_MAJ(a, b, c));
        h = g;
        g = f;
        f = e;
        e = _mm512_add_epi32(d, t1);
        d = c;
        c = b;
        b = a;
        a = _mm512_add_epi32(t1, t2);
    }
    s[0] = _mm512_add_epi32(s[0], a);
    s[1] = _mm512_add_epi32(s[1], b);
    s[2] = _mm512_add_epi32(s[2], c);
    s[3] = _mm512_add_epi32(s[3], d);
    s[4] = _mm512_add_epi32(s[4], e);
    s[5] = _mm512_add_epi32(s[5], f);
    s[6] = _mm512_add_epi32(s[6], g);
    s[7] = _mm512_add_epi32(s[7], h);
}

/* Write s (word i of every lane in s[i]) as the 32-byte big-endian digest of
 * lane j at out + j*stride: an 8x16 transpose instead of 128 scalar stores. */
KT_AVX512 static inline void kt_x16_store_digests(const __m512i s[8], uint8_t *out, size_t stride)
{
    /* 64-bit element indices: 128-bit lane L of a, then of b (b's elements are 8..15). */
    const __m512i lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    __m512i t[8], u[8];

    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm512_unpacklo_epi32(s[2 * k], s[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(s[2 * k], s[2 * k + 1]);
    }
    /* u[c] (words 0-3) and u[4+c] (words 4-7): in its 128-bit lane L, lane 4L+c. */
    for (int m = 0; m < 2; m++) {
        u[4 * m + 0] = _mm512_unpacklo_epi64(t[4 * m], t[4 * m + 2]);
        u[4 * m + 1] = _mm512_unpackhi_epi64(t[4 * m], t[4 * m + 2]);
        u[4 * m + 2] = _mm512_unpacklo_epi64(t[4 * m + 1], t[4 * m + 3]);
        u[4 * m + 3] = _mm512_unpackhi_epi64(t[4 * m + 1], t[4 * m + 3]);
    }
    for (int c = 0; c < 4; c++) {
        /* 256-bit half H of x0 is lane 4H+c's digest, of x1 lane 4(H+2)+c's. */
        __m512i x0 = KT_BSWAP32X16(_mm512_permutex2var_epi64(u[c], lo, u[4 + c]));
        __m512i x1 = KT_BSWAP32X16(_mm512_permutex2var_epi64(u[c], hi, u[4 + c]));
        _mm256_storeu_si256((__m256i *)(out + (size_t)c * stride), _mm512_castsi512_si256(x0));
        _mm256_storeu_si256((__m256i *)(out + (size_t)(4 + c) * stride), _mm512_extracti64x4_epi64(x0, 1));
        _mm256_storeu_si256((__m256i *)(out + (size_t)(8 + c) * stride), _mm512_castsi512_si256(x1));
        _mm256_storeu_si256((__m256i *)(out + (size_t)(12 + c) * stride), _mm512_extracti64x4_epi64(x1, 1));
    }
}

/*
 * Ask for the same block of the next sixteen messages while this one is
 * compressed.  A batch of 8192 RPMB inputs (2.3 MB) does not fit in L2, and
 * the hardware prefetchers see sixteen short strided streams per group
 * rather than one sequential one; the explicit hints took a 284-byte MAC
 * from about 137 to 123 ns on the reference machine.  A block may straddle
 * two cache lines, hence two hints per lane.  Prefetches never fault, so
 * hints past the end of the batch are harmless.
 */
KT_AVX512 static inline void kt_x16_prefetch(const uint8_t *p, size_t stride)
{
    for (int j = 0; j < 16; j++) {
        _mm_prefetch((const char *)(p + j * stride), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + j * stride + KT_HMAC_BLOCK - 1), _MM_HINT_T0);
    }
}

/*
 * HMACs of groups * 16 equal-length messages: message j at base +
 * j*in_stride, its tag to out + j*out_stride.  One call runs the whole batch
 * so that the first block of the next group is transposed during the outer
 * hash of this one.
 *
 * The inner message's padded tail (the last rem < 64 message bytes, 0x80,
 * zeros and, when it fits, the 64-bit bit length) is read in place: a masked
 * byte load takes exactly the rem message bytes and the padding, the same for
 * every lane, is ORed in.  Copying sixteen tails to the stack first, and the
 * store-forwarding stalls of re-reading them as whole blocks, cost ~10 ns per
 * MAC.
 */
KT_AVX512 static void kt_mac_x16(const struct kt_hmac_state *st, const uint8_t *base,
                                 size_t groups, size_t in_stride, size_t len, uint8_t *out,
                                 size_t out_stride)
{
    __m512i s[8], wa[16], wb[16];
    __m512i *w = wa, *wn = wb, *tmp;
    uint8_t pad[KT_HMAC_BLOCK] __attribute__((aligned(64)));
    const size_t full = len / KT_HMAC_BLOCK, rem = len % KT_HMAC_BLOCK;
    /* The key block counts towards the inner message length. */
    const uint64_t bits = ((uint64_t)len + KT_HMAC_BLOCK) * 8;
    struct kt_x16_src src;

    memset(pad, 0, sizeof(pad));
    pad[rem] = 0x80;
    if (rem < KT_HMAC_BLOCK - 8)
        kt_store_be64(pad + KT_HMAC_BLOCK - 8, bits);
    src.stride = in_stride;
    src.mask = rem ? (__mmask64)(~0ULL >> (64 - rem)) : 0;
    src.pad = _mm512_load_si512((const void *)pad);

    /* Block 0 of group 0: the only one not fetched during another block. */
    src.p = base;
    src.tail = full == 0;
    kt_x16_fetch(w, &src);
    for (size_t gi = 0; gi < groups; gi++) {
        const uint8_t *gb = base + gi * 16 * in_stride;

        for (int i = 0; i < 8; i++)
            s[i] = _mm512_set1_epi32((int)st->inner.h[i]);
        /* Blocks 0..full-1 are whole message blocks, block full the tail. */
        for (size_t b = 0; b <= full; b++) {
            kt_x16_prefetch(gb + b * KT_HMAC_BLOCK + 16 * in_stride, in_stride);
            if (b < full) {
                src.p = gb + (b + 1) * KT_HMAC_BLOCK;
                src.tail = b + 1 == full;
                kt_x16_block(s, w, &src, wn);
                tmp = w, w = wn, wn = tmp;
            } else {
                kt_x16_block(s, w, NULL, NULL);
            }
        }
        if (rem >= KT_HMAC_BLOCK - 8) {
            /* The length did not fit: one more block, zeros and the length,
             * the same for every lane. */
            for (int i = 0; i < 14; i++)
                w[i] = _mm512_setzero_si512();
            w[14] = _mm512_set1_epi32((int)(uint32_t)(bits >> 32));
            w[15] = _mm512_set1_epi32((int)(uint32_t)bits);
            kt_x16_block(s, w, NULL, NULL);
        }
        /* The outer message is the inner digest: its words are the state
         * words, followed by fixed padding for a 96-byte message. */
        for (int i = 0; i < 8; i++)
            w[i] = s[i];
        w[8] = _mm512_set1_epi32((int)0x80000000u);
        for (int i = 9; i < 15; i++)
            w[i] = _mm512_setzero_si512();
        w[15] = _mm512_set1_epi32((KT_HMAC_BLOCK + KT_HMAC_LEN) * 8);
        for (int i = 0; i < 8; i++)
            s[i] = _mm512_set1_epi32((int)st->outer.h[i]);
        if (gi + 1 < groups) {
            src.p = gb + 16 * in_stride;
            src.tail = full == 0;
            kt_x16_block(s, w, &src, wn);
            tmp = w, w = wn, wn = tmp;
        } else {
            kt_x16_block(s, w, NULL, NULL);
        }
        kt_x16_store_digests(s, out + gi * 16 * out_stride, out_stride);
    }
    /* The outer blocks' schedules held inner digests, s outer midstates. */
    OPENSSL_cleanse(wa, sizeof(wa));
    OPENSSL_cleanse(wb, sizeof(wb));
    OPENSSL_cleanse(s, sizeof(s));
}

/* Batch kernels by lanes: 1 = libcrypto one message at a time, 2 = SHA-NI
 * two-lane, 16 = AVX-512.  kt_lanes holds the one in use (0 = not chosen
 * yet).  Relaxed atomics: any valid value computes the same MACs. */
static int kt_lanes;

static int kt_cpu_has(int lanes)
{
    unsigned int a, b, c, d;
    unsigned int xlo, xhi;

    if (lanes == 1)
        return 1;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (lanes == 2)
        return (c & bit_SSSE3) && (c & bit_SSE4_1) && __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
               (b & bit_SHA);
    if (lanes == 16) {
        /* The OS must save the opmask and ZMM state (XCR0 bits 1, 2, 5, 6, 7). */
        if (!(c & bit_OSXSAVE))
            return 0;
        __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
        if ((xlo & 0xe6u) != 0xe6u)
            return 0;
        return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX512F) && (b & bit_AVX512BW);
    }
    return 0;
}

static int kt_best_lanes(void)
{
    if (kt_cpu_has(16))
        return 16;
    if (kt_cpu_has(2))
        return 2;
    return 1;
}

static int kt_lanes_now(void)
{
    int l = __atomic_load_n(&kt_lanes, __ATOMIC_RELAXED);

    if (!l) {
        l = kt_best_lanes();
        __atomic_store_n(&kt_lanes, l, __ATOMIC_RELAXED);
    }
    return l;
}

int kt_hmac_batch_lanes(int lanes)
{
    int was = kt_lanes_now();

    if (lanes == 0)
        __atomic_store_n(&kt_lanes, kt_best_lanes(), __ATOMIC_RELAXED);
    else if (lanes > 0) {
        /* Fall back to the widest kernel the CPU has that is not wider. */
        int use = lanes >= 16 && kt_cpu_has(16) ? 16 : lanes >= 2 && kt_cpu_has(2) ? 2 : 1;
        __atomic_store_n(&kt_lanes, use, __ATOMIC_RELAXED);
    }
    return was;
}
#else
int kt_hmac_batch_lanes(int lanes)
{
    (void)lanes;
    return 1;
}
#endif

void kt_hmac_batch(const void *state, const uint8_t *base, size_t n, size_t in_stride,
                   size_t len, uint8_t *out, size_t out_stride)
{
    const struct kt_hmac_state *st = state;
    SHA256_CTX c;

    /* One stack context for the whole batch, cleansed once at the end. */
    size_t i = 0;

#if defined(__x86_64__)
    int lanes = kt_lanes_now();

    if (lanes == 16 && n >= 16) {
        kt_mac_x16(st, base, n / 16, in_stride, len, out, out_stride);
        i = n & ~(size_t)15;
    }
    if (lanes >= 2)
        for (; i + 1 < n; i += 2)
            kt_mac_x2(st, base + i * in_stride, base + (i + 1) * in_stride, len,
                      out + i * out_stride, out + (i + 1) * out_stride);
#endif
    for (; i < n; i++)
        kt_mac_one(st, &c, base + i * in_stride, len, out + i * out_stride);
    OPENSSL_cleanse(&c, sizeof(c));
}

int kt_hmac_ct_differ(const uint8_t *a, const uint8_t *b, size_t n)
{
    /* volatile keeps the compiler from turning the loop into an early-exit memcmp. */
    const volatile uint8_t *x = a, *y = b;
    uint32_t acc = 0;

    for (size_t i = 0; i < n; i++)
        acc |= (uint32_t)(x[i] ^ y[i]);
    /* 0 -> 0, 1..255 -> 1, without a branch. */
    return (int)((acc + 0xffu) >> 8);
}

int kt_hmac_verify(const void *state, const uint8_t *msg, size_t len, const uint8_t *tag)
{
    uint8_t mac[KT_HMAC_LEN];
    int differ;

    kt_hmac_mac(state, msg, len, mac);
    differ = kt_hmac_ct_differ(mac, tag, KT_HMAC_LEN);
    /* The correct MAC of an attacker's message is itself a forgery aid. */
    OPENSSL_cleanse(mac, sizeof(mac));
    return 1 - differ;
}

int kt_hmac_sha384(const uint8_t *key, size_t keylen, const uint8_t *msg, size_t len, uint8_t *out)
{
    unsigned int n = 0;

    /* libcrypto's one-shot HMAC cleanses the context it keys (EVP_MAC_CTX_free). */
    if (keylen > INT_MAX || !HMAC(EVP_sha384(), key, (int)keylen, msg, len, out, &n) ||
        n != KT_HMAC_SHA384_LEN) {
        OPENSSL_cleanse(out, KT_HMAC_SHA384_LEN);
        return -1;
    }
    return 0;
}
