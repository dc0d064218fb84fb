/* KEYCTL_RESTRICT_KEYRING and the KEYCTL_PKEY_* operations, errno folded into the result.
 *
 * Plain arguments instead of the UAPI structs, so the Python side needs no
 * struct layout: the C side fills struct keyctl_pkey_params from them and
 * copies struct keyctl_pkey_query out into six numbers.
 */
#ifndef KT_KEYCTL_PKEY_H
#define KT_KEYCTL_PKEY_H

#include <stdint.h>

long kt_keyctl_restrict(int32_t ringid, const char *type, const char *restriction);
/* out: supported_ops, key_size, max_data_size, max_sig_size, max_enc_size, max_dec_size */
long kt_keyctl_pkey_query(int32_t id, const char *info, uint32_t out[6]);
/* ENCRYPT/DECRYPT/SIGN: out2 is the output buffer (out2_len its size);
 * VERIFY: out2 is the signature (out2_len its length). */
long kt_keyctl_pkey_op(int op, int32_t id, const char *info, const void *in, uint32_t in_len,
                       void *out2, uint32_t out2_len);

#endif
