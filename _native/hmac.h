/*
 * HMAC-SHA256 with precomputed pads (RFC 2104 / FIPS 198-1) over OpenSSL's
 * SHA-256 block function, which uses SHA-NI where the CPU has it.
 *
 * A key's state is kt_hmac_state_size() bytes that the caller allocates in
 * secret memory (a SecretBuffer) and wipes when the key object dies; every
 * function here only reads it, so one state may be shared by many threads.
 */
#ifndef KT_HMAC_H
#define KT_HMAC_H
#include <stddef.h>
#include <stdint.h>

#define KT_HMAC_LEN 32
#define KT_HMAC_BLOCK 64

size_t kt_hmac_state_size(void);
/* Derive the inner/outer midstates from key; 0 on success, -1 on failure. */
int kt_hmac_init(void *state, const uint8_t *key, size_t keylen);
void kt_hmac_mac(const void *state, const uint8_t *msg, size_t len, uint8_t *out);
/* One MAC over the concatenation of n parts, without joining them. */
void kt_hmac_mac_parts(const void *state, const uint8_t *const *parts, const size_t *lens,
                       size_t n, uint8_t *out);
/* One MAC over n regions of len bytes each, region i starting at base + i*stride. */
void kt_hmac_mac_strided(const void *state, const uint8_t *base, size_t n, size_t stride,
                         size_t len, uint8_t *out);
/* n independent MACs: message i is len bytes at base + i*in_stride, its tag goes to
 * out + i*out_stride.  The tags (32 bytes each, out_stride >= 32) must not overlap
 * any message: the AVX-512 kernel reads ahead into later messages before it
 * writes earlier tags. */
void kt_hmac_batch(const void *state, const uint8_t *base, size_t n, size_t in_stride,
                   size_t len, uint8_t *out, size_t out_stride);
/* Query (lanes < 0) or choose the batch kernel: 0 = the best this CPU has,
 * 1 = libcrypto one message at a time, 2 = two-lane SHA-NI, 16 = AVX-512.
 * A kernel the CPU lacks falls back to the next narrower one.  Returns the
 * kernel in use before the call.  Every choice computes the same MACs; this
 * exists so tests and benchmarks can compare them. */
int kt_hmac_batch_lanes(int lanes);
/* 1 when tag (KT_HMAC_LEN bytes) is the MAC of msg, else 0; constant time. */
int kt_hmac_verify(const void *state, const uint8_t *msg, size_t len, const uint8_t *tag);
/* 0 when equal, 1 otherwise; time depends only on n. */
int kt_hmac_ct_differ(const uint8_t *a, const uint8_t *b, size_t n);

#define KT_HMAC_SHA384_LEN 48
/* HMAC-SHA-384 of msg under key, in one call, into out (48 bytes): for keys that
 * must land straight in secret memory (Python's hmac and cryptography return
 * bytes).  0 on success, -1 on failure (out zeroed). */
int kt_hmac_sha384(const uint8_t *key, size_t keylen, const uint8_t *msg, size_t len, uint8_t *out);

#endif
