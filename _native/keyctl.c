/* Raw add_key(2) / request_key(2) / keyctl(2), errno folded into the result. */
#define _GNU_SOURCE
#include "keyctl.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

static long kt_result(long rc)
{
    return rc < 0 ? -(long)errno : rc;
}

long kt_add_key(const char *type, const char *desc, const void *payload, size_t plen, int32_t ringid)
{
    return kt_result(syscall(SYS_add_key, type, desc, payload, plen, ringid));
}

long kt_request_key(const char *type, const char *desc, const char *callout, int32_t destringid)
{
    return kt_result(syscall(SYS_request_key, type, desc, callout, destringid));
}

long kt_keyctl_int(int op, long a2, long a3, long a4, long a5)
{
    return kt_result(syscall(SYS_keyctl, op, a2, a3, a4, a5));
}

/* REVOKE / CLEAR / INVALIDATE: one key id. */
long kt_keyctl_id(int op, int32_t id)
{
    return kt_result(syscall(SYS_keyctl, op, (long)id, 0L, 0L, 0L));
}

/* LINK / UNLINK: a key id and a keyring id. */
long kt_keyctl_id2(int op, int32_t id, int32_t id2)
{
    return kt_result(syscall(SYS_keyctl, op, (long)id, (long)id2, 0L, 0L));
}

/* KEYCTL_READ / KEYCTL_DESCRIBE / KEYCTL_GET_SECURITY: (id, buffer, length). */
long kt_keyctl_buf(int op, int32_t id, void *buf, size_t buflen)
{
    return kt_result(syscall(SYS_keyctl, op, (long)id, buf, buflen, 0L));
}

long kt_keyctl_update(int32_t id, const void *payload, size_t plen)
{
    return kt_result(syscall(SYS_keyctl, 2 /* KEYCTL_UPDATE */, (long)id, payload, plen, 0L));
}

long kt_keyctl_search(int32_t ringid, const char *type, const char *desc, int32_t destringid)
{
    return kt_result(syscall(SYS_keyctl, 10 /* KEYCTL_SEARCH */, (long)ringid, type, desc, (long)destringid));
}

long kt_keyctl_join(const char *name)
{
    return kt_result(syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, name, 0L, 0L, 0L));
}
