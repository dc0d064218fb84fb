/*
 * One-shot seal and unseal of the kernel's "encrypted" key blob
 * (security/keys/encrypted-keys/encrypted.c; spec kernel-keytypes.md 1.3-1.6).
 *
 * The master key goes in, the blob (or the plaintext) comes out; the two
 * derived keys, the AES key schedule and the HMAC pads live only on the C
 * stack and are wiped before return.  keyring_types/types/encrypted_blob.py
 * holds the pure-Python reference these must agree with byte for byte.
 */
#ifndef KT_ENCRYPTED_H
#define KT_ENCRYPTED_H
#include <stddef.h>
#include <stdint.h>

#define KT_ENC_IV_SIZE 16
#define KT_ENC_HASH_SIZE 32
#define KT_ENC_BLOCK 16
/* Decrypted data is at most MAX_DATA_SIZE (4096) bytes in the kernel. */
#define KT_ENC_MAX_DATA 4096

#define KT_ENC_OK 0
#define KT_ENC_ERR_CRYPTO (-1) /* libcrypto failed (allocation, provider) */
#define KT_ENC_ERR_MAC (-2)    /* HMAC mismatch: wrong master or tampered blob */
#define KT_ENC_ERR_SIZE (-3)   /* a length outside what the format allows */

/* Bytes of the datablob rows header || IV || 0x00 || ciphertext excluding the header. */
size_t kt_enc_padded_len(size_t datalen);

/* Seal: ct_out gets padded_len(datalen) bytes (AES-256-CBC of data zero-padded),
 * mac_out 32 bytes (HMAC-SHA256 over header || iv || 0x00 || ct).  header is the
 * datablob's "fmt\0master\0datalen\0" rows (hlen bytes). */
int kt_enc_seal(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                const uint8_t *iv, const uint8_t *data, size_t datalen,
                uint8_t *ct_out, uint8_t *mac_out);

/* Bytes kt_enc_seal_export writes: the header plus the hex of IV, gap, ciphertext, MAC. */
size_t kt_enc_export_len(size_t hlen, size_t datalen);

/* Seal and write what "keyctl pipe" prints: the header with each NUL turned into
 * a space ("fmt master datalen "), then hex(iv) "00" hex(ct) hex(mac), lower case. */
int kt_enc_seal_export(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                       const uint8_t *iv, const uint8_t *data, size_t datalen, uint8_t *out);

/* Unseal: derive both keys, check mac (32 bytes) over header || iv || 0x00 || ct in
 * constant time, and only then decrypt; the first datalen plaintext bytes go to
 * plain_out (the zero pad never leaves the stack).  ct is padded_len(datalen) bytes. */
int kt_enc_unseal(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                  const uint8_t *iv, const uint8_t *ct, const uint8_t *mac, size_t datalen,
                  uint8_t *plain_out);

/* kt_enc_unseal with the ciphertext and MAC adjacent, as they are in the blob:
 * ctmac is padded_len(datalen) + 32 bytes (KT_ENC_ERR_SIZE otherwise). */
int kt_enc_unseal_joined(const uint8_t *master, size_t mlen, const uint8_t *header, size_t hlen,
                         const uint8_t *iv, const uint8_t *ctmac, size_t ctmaclen, size_t datalen,
                         uint8_t *plain_out);

/* An ecryptfs key's auth token (struct ecryptfs_auth_tok) written into tok (740
 * bytes): the fixed fields copied from fixed (740 bytes, key and signature zero),
 * the 16-character signature at offset 712, 64 random key bytes at 648; and the
 * key's random IV (16 bytes) into iv.  Random bytes from the buffered CSPRNG
 * (rand.h).  0, or -1 if the OS refused random bytes. */
#define KT_ECRYPTFS_AUTH_TOK_SIZE 740
#define KT_ECRYPTFS_KEY_OFFSET 648
#define KT_ECRYPTFS_KEY_BYTES 64
#define KT_ECRYPTFS_SIG_OFFSET 712
#define KT_ECRYPTFS_SIG_SIZE 16
int kt_enc_ecryptfs_new(void *tok, const uint8_t *fixed, const char *sig, uint8_t *iv);

/* The AES-NI path for AES-256-CBC (used when the CPU has it): 1 to use it where
 * available, 0 to force the libcrypto EVP path, -1 to only ask.  Returns whether
 * it was in use before the call.  For tests that hold both paths to the reference. */
int kt_enc_set_aesni(int on);

#endif
