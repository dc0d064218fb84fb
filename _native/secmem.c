/*
 * Secret memory for key material.
 *
 * Small secrets come from size-class free lists carved out of 256 KiB arenas;
 * large ones get page-rounded regions of their own.  Every region is mmap()ed
 * (so it lives outside the Python heap), mlock()ed where RLIMIT_MEMLOCK allows,
 * and marked MADV_DONTDUMP.  Freed blocks are wiped and kept mapped: a stale
 * memoryview then reads zeros instead of faulting.  kt_secure_wipe_all() runs
 * at interpreter exit and wipes every arena.
 */
#define _GNU_SOURCE
#include "secmem.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KT_ARENA_SIZE (256u * 1024u)
#define KT_MIN_CLASS 16u
#define KT_MAX_CLASS 4096u
#define KT_NCLASSES 9 /* 16 .. 4096 */

struct kt_region {
    struct kt_region *next;
    unsigned char *base;
    size_t size;
    int locked;
};

struct kt_free_block {
    struct kt_free_block *next;
};

/* Large freed regions are recycled by exact page count. */
struct kt_big_free {
    struct kt_big_free *next;
    size_t pages;
};

static pthread_mutex_t kt_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kt_region *kt_regions;
static struct kt_free_block *kt_free[KT_NCLASSES];
static unsigned char *kt_bump[KT_NCLASSES];
static size_t kt_bump_left[KT_NCLASSES];
static struct kt_big_free *kt_big_free_list;
static size_t kt_live;
static int kt_shut;

void kt_wipe(void *p, size_t n)
{
    /* explicit_bzero is not elided by the optimiser; the barrier is belt and braces. */
    explicit_bzero(p, n);
    __asm__ __volatile__("" : : "r"(p) : "memory");
}

int kt_ct_memcmp(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= (unsigned char)(x[i] ^ y[i]);
    /* Map 0 -> 0 and anything else -> 1 without a branch. */
    return (int)((((unsigned)acc) + 0xffu) >> 8);
}

static size_t kt_page(void)
{
    static size_t page;
    if (!page)
        page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

static struct kt_region *kt_map(size_t size)
{
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
#ifdef MADV_DONTDUMP
    madvise(base, size, MADV_DONTDUMP);
#endif
    /* Region bookkeeping lives in ordinary memory: it holds no secret. */
    static struct kt_region pool[4096];
    static size_t pool_used;
    struct kt_region *r;
    if (pool_used < sizeof(pool) / sizeof(pool[0])) {
        r = &pool[pool_used++];
    } else {
        r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r == MAP_FAILED) {
            munmap(base, size);
            return NULL;
        }
    }
    r->base = base;
    r->size = size;
    r->locked = mlock(base, size) == 0;
    r->next = kt_regions;
    kt_regions = r;
    return r;
}

static int kt_class(size_t n)
{
    size_t c = KT_MIN_CLASS;
    int i = 0;
    while (c < n) {
        c <<= 1;
        i++;
    }
    return i;
}

void *kt_secure_alloc(size_t n)
{
    void *p = NULL;
    if (n == 0)
        n = 1;
    pthread_mutex_lock(&kt_lock);
    if (kt_shut)
        goto out;
    if (n <= KT_MAX_CLASS) {
        int c = kt_class(n);
        size_t csize = (size_t)KT_MIN_CLASS << c;
        if (kt_free[c]) {
            struct kt_free_block *b = kt_free[c];
            kt_free[c] = b->next;
            b->next = NULL; /* the rest of the block was wiped on free */
            p = b;
        } else {
            if (kt_bump_left[c] < csize) {
                struct kt_region *r = kt_map(KT_ARENA_SIZE);
                if (!r)
                    goto out;
                kt_bump[c] = r->base;
                kt_bump_left[c] = r->size;
            }
            p = kt_bump[c];
            kt_bump[c] += csize;
            kt_bump_left[c] -= csize;
        }
        kt_live += csize;
    } else {
        size_t pg = kt_page();
        size_t pages = (n + pg - 1) / pg;
        struct kt_big_free **pp = &kt_big_free_list;
        while (*pp && (*pp)->pages != pages)
            pp = &(*pp)->next;
        if (*pp) {
            struct kt_big_free *b = *pp;
            *pp = b->next;
            kt_wipe(b, sizeof(*b));
            p = b;
        } else {
            struct kt_region *r = kt_map(pages * pg);
            if (!r)
                goto out;
            p = r->base;
        }
        kt_live += pages * pg;
    }
out:
    pthread_mutex_unlock(&kt_lock);
    return p;
}

void *kt_secure_dup(const char *src, size_t n)
{
    void *p = kt_secure_alloc(n);
    if (p && n)
        memcpy(p, src, n);
    return p;
}

void kt_secure_free(void *p, size_t n)
{
    if (!p)
        return;
    if (n == 0)
        n = 1;
    pthread_mutex_lock(&kt_lock);
    if (kt_shut) {
        pthread_mutex_unlock(&kt_lock);
        return;
    }
    if (n <= KT_MAX_CLASS) {
        int c = kt_class(n);
        size_t csize = (size_t)KT_MIN_CLASS << c;
        kt_wipe(p, csize);
        struct kt_free_block *b = p;
        b->next = kt_free[c];
        kt_free[c] = b;
        kt_live -= csize;
    } else {
        size_t pg = kt_page();
        size_t pages = (n + pg - 1) / pg;
        kt_wipe(p, pages * pg);
        struct kt_big_free *b = p;
        b->pages = pages;
        b->next = kt_big_free_list;
        kt_big_free_list = b;
        kt_live -= pages * pg;
    }
    pthread_mutex_unlock(&kt_lock);
}

int kt_secure_is_locked(const void *p, size_t n)
{
    const unsigned char *q = p;
    int locked = 0;
    pthread_mutex_lock(&kt_lock);
    for (struct kt_region *r = kt_regions; r; r = r->next) {
        if (q >= r->base && q + n <= r->base + r->size) {
            locked = r->locked;
            break;
        }
    }
    pthread_mutex_unlock(&kt_lock);
    return locked;
}

void kt_secure_wipe_all(void)
{
    pthread_mutex_lock(&kt_lock);
    for (struct kt_region *r = kt_regions; r; r = r->next)
        kt_wipe(r->base, r->size);
    kt_shut = 1;
    pthread_mutex_unlock(&kt_lock);
}

size_t kt_secure_live_bytes(void)
{
    size_t n;
    pthread_mutex_lock(&kt_lock);
    n = kt_live;
    pthread_mutex_unlock(&kt_lock);
    return n;
}
