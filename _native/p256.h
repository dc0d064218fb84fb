/*
 * ECDSA P-256 with SHA-256 verification over OpenSSL's libcrypto, for TDX quotes: the public
 * key is given raw (X || Y, 64 bytes, as a quote carries its attestation key) and parsed once,
 * signatures raw (R || S, 64 bytes, big-endian).  A key handle is read-only after creation,
 * so one may be shared by many threads.
 */
#ifndef KT_P256_H
#define KT_P256_H
#include <stddef.h>
#include <stdint.h>

#define KT_P256_POINT 64
#define KT_P256_SIG 64

/* A key handle for the point X || Y; NULL if it is not a point on P-256 (or on failure). */
void *kt_p256_key_new(const uint8_t *point);
void kt_p256_key_free(void *key);
/* 1 if sig is a valid signature of msg under key, 0 if not, -1 if libcrypto failed. */
int kt_p256_verify(const void *key, const uint8_t *msg, size_t len, const uint8_t *sig);

#endif
