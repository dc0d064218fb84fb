/*
 * The "encrypted" key blob in one native call each way (see encrypted.h).
 *
 * Why native: through the `cryptography` package one seal costs a cipher
 * context (~7 us) and an HMAC object (~3 us) on top of two hashlib
 * derivations and several Python copies of secret bytes; here the whole job
 * is a few hundred nanoseconds of libcrypto and the secrets never reach the
 * Python heap.
 *
 * Kernel facts this follows (spec kernel-keytypes.md 1.4-1.6):
 *  - both derived keys are SHA-256 over label || master || zeros, where the
 *    input is max(strlen("AUTH_KEY") + 1 + mlen, 32) bytes for BOTH labels:
 *    the kernel sizes one buffer by the longer label, so the ENC input always
 *    ends in an extra zero byte and short masters are zero-padded to 32;
 *  - AES-256-CBC over the data zero-padded to the block size (no PKCS#7);
 *  - HMAC-SHA256 under the AUTH key over the datablob
 *    header || IV || one zero byte || ciphertext.
 *
 * SHA-256 goes through OpenSSL's low-level SHA256_* functions (deprecated in
 * OpenSSL 3 but exported, and without EVP's per-call fetch and dispatch).
 * AES-256-CBC uses the AES-NI instructions directly where the CPU has them:
 * every call has a new key and one to a few blocks, and with EVP's context
 * allocation, provider dispatch and key setup a CBC call of two blocks cost
 * ~500 ns (about half of an unseal), against 110-180 ns here, key expansion
 * included.  Elsewhere it goes through EVP with the cipher fetched once.  Both
 * paths are held to the `cryptography` reference.
 */
#define _GNU_SOURCE
#define OPENSSL_SUPPRESS_DEPRECATED
#include "encrypted.h"
#include "rand.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KT_AESNI_BUILD 1
#endif

static const uint8_t kt_enc_label[] = "ENC_KEY";   /* with its NUL: 8 bytes */
static const uint8_t kt_auth_label[] = "AUTH_KEY"; /* with its NUL: 9 bytes */
#define KT_LABEL_ROOM (sizeof(kt_auth_label))
#define KT_SHA_BLOCK 64

static pthread_once_t kt_cipher_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *kt_fetched;
static const EVP_CIPHER *kt_cipher;

static void kt_cipher_init(void)
{
    /* An explicit fetch once instead of the implicit one EVP_aes_256_cbc()
     * would repeat inside every EVP_*Init. */
    kt_fetched = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    kt_cipher = kt_fetched ? kt_fetched : EVP_aes_256_cbc();
}

static void kt_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

size_t kt_enc_padded_len(size_t datalen)
{
    return (datalen + KT_ENC_BLOCK - 1) / KT_ENC_BLOCK * KT_ENC_BLOCK;
}

size_t kt_enc_export_len(size_t hlen, size_t datalen)
{
    return hlen + 2 * (KT_ENC_IV_SIZE + 1 + kt_enc_padded_len(datalen) + KT_ENC_HASH_SIZE);
}

/* SHA-256 of label || master || zeros, sized as the kernel does (see top). */
static int kt_derive(const uint8_t *label, size_t labellen, const uint8_t *master, size_t mlen,
                     uint8_t out[KT_ENC_HASH_SIZE])
{
    static const uint8_t zeros[KT_ENC_HASH_SIZE + 1];
    size_t total = KT_LABEL_ROOM + mlen;
    SHA256_CTX c;
    int ok = 1;

    if (total < KT_ENC_HASH_SIZE)
        total = KT_ENC_HASH_SIZE;
    ok &= SHA256_Init(&c);
    ok &= SHA256_Update(&c, label, labellen);
    if (mlen)
        ok &= SHA256_Update(&c, master, mlen);
    ok &= SHA256_Update(&c, zeros, total - labellen - mlen);
    ok &= SHA256_Final(out, &c);
    kt_wipe(&c, sizeof(c));
    return ok ? 0 : -1;
}

static int kt_derive_both(const uint8_t *master, size_t mlen, uint8_t enc[KT_ENC_HASH_SIZE],
                          uint8_t auth[KT_ENC_HASH_SIZE])
{
    if (kt_derive(kt_enc_label, sizeof(kt_enc_label), master, mlen, enc))
        return -1;
    return kt_derive(kt_auth_label, sizeof(kt_auth_label), master, mlen, auth);
}

/* HMAC-SHA256 (RFC 2104) under a 32-byte key over header || iv || 0x00 || ct. */
static int kt_datablob_mac(const uint8_t key[KT_ENC_HASH_SIZE], const uint8_t *header, size_t hlen,
                           const uint8_t *iv, const uint8_t *ct, size_t ctlen,
                           uint8_t out[KT_ENC_HASH_SIZE])
{
    static const uint8_t gap = 0;
    uint8_t pad[KT_SHA_BLOCK];
    uint8_t inner[KT_ENC_HASH_SIZE];
    SHA256_CTX c;
    int ok = 1;

    /* The key is shorter than a block: K0 is the key zero-extended. */
    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < KT_ENC_HASH_SIZE; i++)
        pad[i] ^= key[i];
    ok &= SHA256_Init(&c);
    ok &= SHA256_Update(&c, pad, sizeof(pad));
    ok &= SHA256_Update(&c, header, hlen);
    ok &= SHA256_Update(&c, iv, KT_ENC_IV_SIZE);
    ok &= SHA256_Update(&c, &gap, 1);
    ok &= SHA256_Update(&c, ct, ctlen);
    ok &= SHA256_Final(inner, &c);

    memset(pad, 0x5c, sizeof(pad));
    for (size_t i = 0; i < KT_ENC_HASH_SIZE; i++)
        pad[i] ^= key[i];
    ok &= SHA256_Init(&c);
    ok &= SHA256_Update(&c, pad, sizeof(pad));
    ok &= SHA256_Update(&c, inner, sizeof(inner));
    ok &= SHA256_Final(out, &c);

    kt_wipe(pad, sizeof(pad));
    kt_wipe(inner, sizeof(inner));
    kt_wipe(&c, sizeof(c));
    return ok ? 0 : -1;
}

#ifdef KT_AESNI_BUILD
/* 1 when the CPU has AES-NI and the direct path is enabled (kt_enc_set_aesni). */
static int kt_aesni;
static pthread_once_t kt_aesni_once = PTHREAD_ONCE_INIT;

static void kt_aesni_detect(void)
{
    kt_aesni = __builtin_cpu_supports("aes") ? 1 : 0;
}

#define KT_AESNI __attribute__((target("aes,sse2")))

/* One step of the AES-256 key schedule (FIPS-197 5.2): each word of the new
 * round key is the word 8 back xor the previous new word, i.e. the prefix xor
 * of the round key two back, xor the transformed word (broadcast in t). */
KT_AESNI static inline __m128i kt_aes_step(__m128i two_back, __m128i t)
{
    two_back = _mm_xor_si128(two_back, _mm_slli_si128(two_back, 4));
    two_back = _mm_xor_si128(two_back, _mm_slli_si128(two_back, 8));
    return _mm_xor_si128(two_back, t);
}

/* Round keys 2j and 2j+1.  AESKEYGENASSIST gives SubWord of dwords 1 and 3 and
 * RotWord(SubWord) ^ rcon of them; the even key takes RotWord(SubWord(w3)) ^ rcon
 * (dword 3, shuffle 0xff), the odd one SubWord(w3) of the even key (dword 2,
 * shuffle 0xaa).  The immediate must be a constant, hence a macro. */
#define KT_AES_PAIR(rk, j, rcon)                                                                    \
    do {                                                                                            \
        rk[2 * (j)] = kt_aes_step(rk[2 * (j) - 2],                                                  \
                                  _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[2 * (j) - 1], rcon), 0xff)); \
        if ((j) < 7)                                                                                \
            rk[2 * (j) + 1] = kt_aes_step(rk[2 * (j) - 1],                                          \
                                          _mm_shuffle_epi32(_mm_aeskeygenassist_si128(rk[2 * (j)], 0), 0xaa)); \
    } while (0)

/* The 15 encryption round keys of AES-256. */
KT_AESNI static void kt_aes256_expand(const uint8_t key[32], __m128i rk[15])
{
    rk[0] = _mm_loadu_si128((const __m128i *)key);
    rk[1] = _mm_loadu_si128((const __m128i *)(key + 16));
    KT_AES_PAIR(rk, 1, 0x01);
    KT_AES_PAIR(rk, 2, 0x02);
    KT_AES_PAIR(rk, 3, 0x04);
    KT_AES_PAIR(rk, 4, 0x08);
    KT_AES_PAIR(rk, 5, 0x10);
    KT_AES_PAIR(rk, 6, 0x20);
    KT_AES_PAIR(rk, 7, 0x40);
}

KT_AESNI static inline __m128i kt_aes256_enc_block(const __m128i rk[15], __m128i x)
{
    x = _mm_xor_si128(x, rk[0]);
    for (int r = 1; r < 14; r++)
        x = _mm_aesenc_si128(x, rk[r]);
    return _mm_aesenclast_si128(x, rk[14]);
}

KT_AESNI static int kt_cbc_encrypt_aesni(const uint8_t key[KT_ENC_HASH_SIZE], const uint8_t *iv,
                                         const uint8_t *data, size_t datalen, uint8_t *ct)
{
    __m128i rk[15], chain = _mm_loadu_si128((const __m128i *)iv), blk;
    uint8_t last[KT_ENC_BLOCK];
    size_t off;

    kt_aes256_expand(key, rk);
    for (off = 0; off + KT_ENC_BLOCK <= datalen; off += KT_ENC_BLOCK) {
        blk = _mm_loadu_si128((const __m128i *)(data + off));
        chain = kt_aes256_enc_block(rk, _mm_xor_si128(blk, chain));
        _mm_storeu_si128((__m128i *)(ct + off), chain);
    }
    if (off != datalen) {
        /* The partial last block, zero-padded in a stack copy that is wiped. */
        memset(last, 0, sizeof(last));
        memcpy(last, data + off, datalen - off);
        blk = _mm_loadu_si128((const __m128i *)last);
        chain = kt_aes256_enc_block(rk, _mm_xor_si128(blk, chain));
        _mm_storeu_si128((__m128i *)(ct + off), chain);
        OPENSSL_cleanse(last, sizeof(last));
    }
    OPENSSL_cleanse(rk, sizeof(rk));
    return 0;
}

KT_AESNI static int kt_cbc_decrypt_aesni(const uint8_t key[KT_ENC_HASH_SIZE], const uint8_t *iv,
                                         const uint8_t *ct, size_t datalen, uint8_t *plain)
{
    __m128i rk[15], dk[15], chain = _mm_loadu_si128((const __m128i *)iv), c, x;
    uint8_t last[KT_ENC_BLOCK];
    size_t padded = kt_enc_padded_len(datalen);

    kt_aes256_expand(key, rk);
    /* The equivalent inverse cipher: round keys reversed, the inner ones through InvMixColumns. */
    dk[0] = rk[14];
    for (int r = 1; r < 14; r++)
        dk[r] = _mm_aesimc_si128(rk[14 - r]);
    dk[14] = rk[0];
    for (size_t off = 0; off < padded; off += KT_ENC_BLOCK) {
        c = _mm_loadu_si128((const __m128i *)(ct + off));
        x = _mm_xor_si128(c, dk[0]);
        for (int r = 1; r < 14; r++)
            x = _mm_aesdec_si128(x, dk[r]);
        x = _mm_xor_si128(_mm_aesdeclast_si128(x, dk[14]), chain);
        chain = c;
        if (off + KT_ENC_BLOCK <= datalen) {
            _mm_storeu_si128((__m128i *)(plain + off), x);
        } else {
            /* Only datalen bytes leave: the zero pad stays on the stack, then is wiped. */
            _mm_storeu_si128((__m128i *)last, x);
            memcpy(plain + off, last, datalen - off);
            OPENSSL_cleanse(last, sizeof(last));
        }
    }
    OPENSSL_cleanse(rk, sizeof(rk));
    OPENSSL_cleanse(dk, sizeof(dk));
    return 0;
}

static int kt_use_aesni(void)
{
    pthread_once(&kt_aesni_once, kt_aesni_detect);
    return kt_aesni;
}

/* A test switch: not meant to be flipped while other threads seal. */
int kt_enc_set_aesni(int on)
{
    int was = kt_use_aesni();
    if (on == 0)
        kt_aesni = 0;
    else if (on > 0)
        kt_aesni_detect();
    return was;
}
#else
int kt_enc_set_aesni(int on)
{
    (void)on;
    return 0;
}
#endif

/* AES-256-CBC of data zero-padded to the block; ct gets padded_len(datalen) bytes. */
static int kt_cbc_encrypt(const uint8_t key[KT_ENC_HASH_SIZE], const uint8_t *iv, const uint8_t *data,
                          size_t datalen, uint8_t *ct)
{
    size_t full = datalen - datalen % KT_ENC_BLOCK;
    uint8_t last[KT_ENC_BLOCK];
    EVP_CIPHER_CTX *ctx;
    int outl, ok = 1;

#ifdef KT_AESNI_BUILD
    if (kt_use_aesni())
        return kt_cbc_encrypt_aesni(key, iv, data, datalen, ct);
#endif
    pthread_once(&kt_cipher_once, kt_cipher_init);
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return -1;
    ok &= EVP_EncryptInit_ex(ctx, kt_cipher, NULL, key, iv);
    ok &= EVP_CIPHER_CTX_set_padding(ctx, 0);
    if (ok && full)
        ok &= EVP_EncryptUpdate(ctx, ct, &outl, data, (int)full);
    if (ok && full != datalen) {
        /* The partial last block is padded in a stack copy that is wiped. */
        memset(last, 0, sizeof(last));
        memcpy(last, data + full, datalen - full);
        ok &= EVP_EncryptUpdate(ctx, ct + full, &outl, last, KT_ENC_BLOCK);
        kt_wipe(last, sizeof(last));
    }
    if (ok)
        ok &= EVP_EncryptFinal_ex(ctx, ct + kt_enc_padded_len(datalen), &outl);
    /* Frees (and cleanses) the key schedule. */
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* AES-256-CBC decryption of padded_len(datalen) bytes; only the first datalen
 * plaintext bytes are written to plain, the pad is dropped as the kernel does. */
static int kt_cbc_decrypt(const uint8_t key[KT_ENC_HASH_SIZE], const uint8_t *iv, const uint8_t *ct,
                          size_t datalen, uint8_t *plain)
{
    size_t full = datalen - datalen % KT_ENC_BLOCK;
    uint8_t last[KT_ENC_BLOCK];
    EVP_CIPHER_CTX *ctx;
    int outl, ok = 1;

#ifdef KT_AESNI_BUILD
    if (kt_use_aesni())
        return kt_cbc_decrypt_aesni(key, iv, ct, datalen, plain);
#endif
    pthread_once(&kt_cipher_once, kt_cipher_init);
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return -1;
    ok &= EVP_DecryptInit_ex(ctx, kt_cipher, NULL, key, iv);
    ok &= EVP_CIPHER_CTX_set_padding(ctx, 0);
    /* Without padding EVP holds no block back: every full block comes out at once. */
    if (ok && full)
        ok &= EVP_DecryptUpdate(ctx, plain, &outl, ct, (int)full);
    if (ok && full != datalen) {
        ok &= EVP_DecryptUpdate(ctx, last, &outl, ct + full, KT_ENC_BLOCK);
        if (ok)
            memcpy(plain + full, last, datalen - full);
        kt_wipe(last, sizeof(last));
    }
    if (ok)
        ok &= EVP_DecryptFinal_ex(ctx, last, &outl);
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

int kt_enc_seal(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                const uint8_t *iv, const uint8_t *data, size_t datalen,
                uint8_t *ct_out, uint8_t *mac_out)
{
    uint8_t enc[KT_ENC_HASH_SIZE], auth[KT_ENC_HASH_SIZE];
    int rc = KT_ENC_ERR_CRYPTO;

    if (datalen > KT_ENC_MAX_DATA)
        return KT_ENC_ERR_SIZE;
    if (kt_derive_both(master, mlen, enc, auth))
        goto out;
    if (kt_cbc_encrypt(enc, iv, data, datalen, ct_out))
        goto out;
    if (kt_datablob_mac(auth, header, hlen, iv, ct_out, kt_enc_padded_len(datalen), mac_out))
        goto out;
    rc = KT_ENC_OK;
out:
    kt_wipe(enc, sizeof(enc));
    kt_wipe(auth, sizeof(auth));
    return rc;
}

static uint8_t *kt_hex(uint8_t *out, const uint8_t *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *out++ = (uint8_t)digits[in[i] >> 4];
        *out++ = (uint8_t)digits[in[i] & 0x0f];
    }
    return out;
}

int kt_enc_seal_export(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                       const uint8_t *iv, const uint8_t *data, size_t datalen, uint8_t *out)
{
    /* Ciphertext and MAC are public (they are the blob): no wipe needed. */
    uint8_t ct[KT_ENC_MAX_DATA], mac[KT_ENC_HASH_SIZE];
    size_t ctlen = kt_enc_padded_len(datalen);
    int rc = kt_enc_seal(master, mlen, header, hlen, iv, data, datalen, ct, mac);

    if (rc)
        return rc;
    for (size_t i = 0; i < hlen; i++)
        out[i] = header[i] ? header[i] : (uint8_t)' ';
    out = kt_hex(out + hlen, iv, KT_ENC_IV_SIZE);
    /* The gap byte after the IV is printed as "00" (spec 1.6). */
    *out++ = '0';
    *out++ = '0';
    out = kt_hex(out, ct, ctlen);
    kt_hex(out, mac, KT_ENC_HASH_SIZE);
    return KT_ENC_OK;
}

int kt_enc_unseal(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                  const uint8_t *iv, const uint8_t *ct, const uint8_t *mac, size_t datalen,
                  uint8_t *plain_out)
{
    uint8_t enc[KT_ENC_HASH_SIZE], auth[KT_ENC_HASH_SIZE], want[KT_ENC_HASH_SIZE];
    int rc = KT_ENC_ERR_CRYPTO;

    if (datalen > KT_ENC_MAX_DATA)
        return KT_ENC_ERR_SIZE;
    if (kt_derive_both(master, mlen, enc, auth))
        goto out;
    if (kt_datablob_mac(auth, header, hlen, iv, ct, kt_enc_padded_len(datalen), want))
        goto out;
    /* Nothing is decrypted unless the MAC matches, as in the kernel. */
    if (CRYPTO_memcmp(want, mac, KT_ENC_HASH_SIZE) != 0) {
        rc = KT_ENC_ERR_MAC;
        goto out;
    }
    if (kt_cbc_decrypt(enc, iv, ct, datalen, plain_out)) {
        kt_wipe(plain_out, datalen);
        goto out;
    }
    rc = KT_ENC_OK;
out:
    kt_wipe(enc, sizeof(enc));
    kt_wipe(auth, sizeof(auth));
    kt_wipe(want, sizeof(want));
    return rc;
}

int kt_enc_unseal_joined(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                         const uint8_t *iv, const uint8_t *ctmac, size_t ctmaclen, size_t datalen,
                         uint8_t *plain_out)
{
    size_t ctlen = kt_enc_padded_len(datalen);

    if (datalen > KT_ENC_MAX_DATA || ctmaclen != ctlen + KT_ENC_HASH_SIZE)
        return KT_ENC_ERR_SIZE;
    return kt_enc_unseal(master, mlen, header, hlen, iv, ctmac, ctmac + ctlen, datalen, plain_out);
}

int kt_enc_ecryptfs_new(void *tok, const uint8_t *fixed, const char *sig, uint8_t *iv)
{
    uint8_t *t = tok;

    memcpy(t, fixed, KT_ECRYPTFS_AUTH_TOK_SIZE);
    memcpy(t + KT_ECRYPTFS_SIG_OFFSET, sig, KT_ECRYPTFS_SIG_SIZE);
    return kt_rand_fill2(iv, KT_ENC_IV_SIZE, t + KT_ECRYPTFS_KEY_OFFSET, KT_ECRYPTFS_KEY_BYTES);
}
