/* Secret memory: locked, excluded from core dumps, wiped on free and at exit. */
#ifndef KT_SECMEM_H
#define KT_SECMEM_H
#include <stddef.h>

void *kt_secure_alloc(size_t n);
/* kt_secure_alloc(n) filled with n bytes from src: one call for the common case. */
void *kt_secure_dup(const char *src, size_t n);
void kt_secure_free(void *p, size_t n);
void kt_wipe(void *p, size_t n);
int kt_ct_memcmp(const void *a, const void *b, size_t n);
int kt_secure_is_locked(const void *p, size_t n);
void kt_secure_wipe_all(void);
size_t kt_secure_live_bytes(void);

#endif
