/* ECDSA P-256 / SHA-256 verification for TDX quotes: see p256.h.
 *
 * The EC_KEY interface is used on purpose: OpenSSL 3 deprecates it, but its ECDSA_do_verify
 * skips the provider fetch that the EVP interface repeats on every operation, which costs more
 * than the P-256 arithmetic itself (it is what `openssl speed ecdsap256` measures, too).
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "p256.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

void *kt_p256_key_new(const uint8_t *point)
{
    unsigned char pub[1 + KT_P256_POINT];
    EC_KEY *key = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    int i;

    if (key == NULL)
        return NULL;
    pub[0] = 0x04; /* uncompressed point */
    for (i = 0; i < KT_P256_POINT; i++)
        pub[1 + i] = point[i];
    /* oct2key decodes the point; check_key refuses one off the curve or of the wrong order. */
    if (EC_KEY_oct2key(key, pub, sizeof(pub), NULL) != 1 || EC_KEY_check_key(key) != 1) {
        EC_KEY_free(key);
        return NULL;
    }
    return key;
}

void kt_p256_key_free(void *key)
{
    EC_KEY_free((EC_KEY *)key);
}

int kt_p256_verify(const void *key, const uint8_t *msg, size_t len, const uint8_t *sig)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    int rc = -1;
    BIGNUM *r = BN_bin2bn(sig, 32, NULL);
    BIGNUM *s = BN_bin2bn(sig + 32, 32, NULL);
    ECDSA_SIG *es = ECDSA_SIG_new();

    if (r == NULL || s == NULL || es == NULL || ECDSA_SIG_set0(es, r, s) != 1)
        goto out;
    r = s = NULL; /* owned by es now */
    if (SHA256(msg, len, digest) == NULL)
        goto out;
    /* 1 valid; 0 or -1 (e.g. R or S zero or not below the order) is a bad signature. */
    rc = ECDSA_do_verify(digest, sizeof(digest), es, (EC_KEY *)key) == 1 ? 1 : 0;
out:
    ECDSA_SIG_free(es);
    BN_free(r);
    BN_free(s);
    return rc;
}
