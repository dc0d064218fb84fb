/* Thin wrappers over the kernel key management system calls.
 *
 * Each returns the syscall's result, or -errno on failure, so the Python side
 * never has to race other threads for the thread-local errno.  No libkeyutils:
 * everything goes through syscall(2) with the numbers from <sys/syscall.h>.
 * Key ids are int32_t (key_serial_t) wherever a helper has a typed slot for
 * one, so the cffi call itself refuses a Python int that does not fit
 * (OverflowError) and the kernel never sees a truncated id; kt_keyctl_int's
 * callers check their values in Python first.
 */
#ifndef KT_KEYCTL_H
#define KT_KEYCTL_H

#include <stddef.h>
#include <stdint.h>

long kt_add_key(const char *type, const char *desc, const void *payload, size_t plen, int32_t ringid);
long kt_request_key(const char *type, const char *desc, const char *callout, int32_t destringid);
long kt_keyctl_int(int op, long a2, long a3, long a4, long a5);
long kt_keyctl_id(int op, int32_t id);
long kt_keyctl_id2(int op, int32_t id, int32_t id2);
long kt_keyctl_buf(int op, int32_t id, void *buf, size_t buflen);
long kt_keyctl_update(int32_t id, const void *payload, size_t plen);
long kt_keyctl_search(int32_t ringid, const char *type, const char *desc, int32_t destringid);
long kt_keyctl_join(const char *name);

#endif
