/* KEYCTL_RESTRICT_KEYRING and KEYCTL_PKEY_*: see keyctl_pkey.h. */
#define _GNU_SOURCE
#include "keyctl_pkey.h"

#include <errno.h>
#include <string.h>
#include <linux/keyctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static long kt_pkey_result(long rc)
{
    return rc < 0 ? -(long)errno : rc;
}

long kt_keyctl_restrict(int32_t ringid, const char *type, const char *restriction)
{
    return kt_pkey_result(syscall(SYS_keyctl, KEYCTL_RESTRICT_KEYRING, (long)ringid, type, restriction, 0L));
}

long kt_keyctl_pkey_query(int32_t id, const char *info, uint32_t out[6])
{
    struct keyctl_pkey_query res;
    long rc;

    memset(&res, 0, sizeof(res));
    /* The second argument is reserved and must be 0. */
    rc = kt_pkey_result(syscall(SYS_keyctl, KEYCTL_PKEY_QUERY, (long)id, 0L, info, &res));
    if (rc >= 0) {
        out[0] = res.supported_ops;
        out[1] = res.key_size;
        out[2] = res.max_data_size;
        out[3] = res.max_sig_size;
        out[4] = res.max_enc_size;
        out[5] = res.max_dec_size;
    }
    return rc;
}

long kt_keyctl_pkey_op(int op, int32_t id, const char *info, const void *in, uint32_t in_len,
                       void *out2, uint32_t out2_len)
{
    struct keyctl_pkey_params params;

    memset(&params, 0, sizeof(params));
    params.key_id = id;
    params.in_len = in_len;
    params.out_len = out2_len; /* in2_len for VERIFY: the same field */
    return kt_pkey_result(syscall(SYS_keyctl, op, &params, info, in, out2));
}
