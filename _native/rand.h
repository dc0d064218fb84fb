#ifndef KT_RAND_H
#define KT_RAND_H
/*
 * Random bytes for new keys from a buffer of the kernel CSPRNG's output.
 *
 * getrandom(2) costs about half a microsecond per call on the machines this
 * runs on, more than the rest of an encrypted key's instantiation in C.  The
 * kernel's own get_random_bytes() draws from a per-CPU buffered generator;
 * this is the user-space counterpart: one getrandom per 4 KiB, handed out in
 * order, each byte once, and wiped as it leaves the buffer.
 *
 * The buffer is mmap()ed, mlock()ed where allowed, excluded from core dumps
 * (MADV_DONTDUMP) and zeroed in a forked child (MADV_WIPEONFORK; a
 * pthread_atfork handler empties it too, for kernels without that flag), so
 * parent and child never hand out the same bytes.
 */
#include <stddef.h>
#include <stdint.h>

/* n bytes into out; 0, or -1 with errno set (getrandom or mmap failed, or EINVAL
 * for a NULL destination of a nonzero length). */
int kt_rand_fill(uint8_t *out, size_t n);

/* A new key's IV (ivlen bytes) and data (n bytes) in one call; 0 or -1. */
int kt_rand_fill2(uint8_t *iv, size_t ivlen, uint8_t *data, size_t n);

#endif
