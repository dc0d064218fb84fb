/* Secret memory: locked, excluded from core dumps, wiped on free, at exit and in a forked child. */
#ifndef KT_SECMEM_H
#define KT_SECMEM_H
#include <stddef.h>

void *kt_secure_alloc(size_t n);
/* kt_secure_alloc(n) filled with n bytes from src: one call for the common case. */
void *kt_secure_dup(const char *src, size_t n);
/* Wipe a block and give it back.  n is ignored: the allocator knows every block's
 * size (kept for callers written before kt_secure_release). */
void kt_secure_free(void *p, size_t n);
/* Wipe the block that starts at p and give it back; the size comes from the
 * allocator, so this fits ffi.gc.  Pointers that are not the start of a block of
 * this allocator (or that were inherited across fork() into unusable memory) are
 * left alone. */
void kt_secure_release(void *p);
void kt_wipe(void *p, size_t n);
int kt_ct_memcmp(const void *a, const void *b, size_t n);
int kt_secure_is_locked(const void *p, size_t n);
void kt_secure_wipe_all(void);
size_t kt_secure_live_bytes(void);
/* How the region holding p is kept from a forked child: 2 MADV_WIPEONFORK (the
 * child reads zeros), 1 MADV_DONTFORK (the child maps fresh zero pages in its
 * place from a pthread_atfork handler), 0 neither flag took (the handler wipes
 * the child's copy); -1 if p is not in secret memory. */
int kt_secure_fork_mode(const void *p);
/* For tests of the fallback: the most protective mode new regions may use (2 or
 * 1); later blocks come from new regions.  Returns the previous setting. */
int kt_secure_set_fork_mode(int mode);

#endif
