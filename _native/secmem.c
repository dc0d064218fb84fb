/*
 * Secret memory for key material.
 *
 * Small secrets come from size-class free lists carved out of 256 KiB arenas;
 * large ones get page-rounded regions of their own.  Every region is mmap()ed
 * (so it lives outside the Python heap), mlock()ed where RLIMIT_MEMLOCK allows,
 * marked MADV_DONTDUMP, and kept from forked children (MADV_WIPEONFORK, else
 * MADV_DONTFORK plus fresh zero pages mapped in the child).  Freed blocks are
 * wiped and stay mapped.  kt_secure_wipe_all() runs at interpreter exit and
 * wipes every region.
 *
 * Arenas are aligned to their size, so the arena (and with it the size class)
 * of any pointer is found by hashing the pointer's arena number: a block can
 * be released from its address alone (ffi.gc hands the destructor nothing else).
 * Regions are never unmapped or unlinked, so lookups need no lock.
 */
#define _GNU_SOURCE
#include "secmem.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18 /* Linux 4.14; older kernels reject it with EINVAL */
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000 /* Linux 4.17; older ones take the address as a hint */
#endif

#define KT_ARENA_SHIFT 18
#define KT_ARENA_SIZE ((size_t)1 << KT_ARENA_SHIFT) /* 256 KiB */
#define KT_MIN_CLASS 16u
#define KT_MAX_CLASS 4096u
#define KT_NCLASSES 9 /* 16 .. 4096 */
#define KT_HASH_BITS 10

struct kt_region {
    struct kt_region *next;     /* every region, newest first */
    struct kt_region *hnext;    /* same hash bucket */
    struct kt_region *bnext;    /* every large region */
    struct kt_region *free_next; /* a free large region: the next one */
    unsigned char *base;
    size_t size;
    int cls;       /* an arena's size class; -1 for a large region (one block) */
    int locked;    /* mlock()ed in this process */
    int fork_mode; /* 2 WIPEONFORK, 1 DONTFORK, 0 neither */
    int lost;      /* DONTFORK region a child could not map again: never touched */
    int in_use;    /* a large region: handed out */
    unsigned gen;  /* fork generation that mapped it: only these blocks are reused */
};

struct kt_free_block {
    struct kt_free_block *next;
};

static pthread_mutex_t kt_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kt_region *kt_regions;
static _Atomic(struct kt_region *) kt_hash[1u << KT_HASH_BITS];
static _Atomic(struct kt_region *) kt_bigs;
static struct kt_free_block *kt_free[KT_NCLASSES];
static unsigned char *kt_bump[KT_NCLASSES];
static size_t kt_bump_left[KT_NCLASSES];
static struct kt_region *kt_big_free_list;
static size_t kt_live;
static int kt_shut;
static unsigned kt_gen;
static int kt_max_fork_mode = 2;

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

static size_t kt_bucket(uintptr_t a)
{
    return (a >> KT_ARENA_SHIFT) & ((1u << KT_HASH_BITS) - 1);
}

/* The region holding address a, or NULL.  Lock free: a region is fully written
 * before it is published, and its lookup fields never change afterwards. */
static struct kt_region *kt_find(uintptr_t a)
{
    struct kt_region *r = atomic_load_explicit(&kt_hash[kt_bucket(a)], memory_order_acquire);
    for (; r; r = r->hnext)
        if (a - (uintptr_t)r->base < r->size)
            return r;
    /* A large region is hashed by its first arena number only: an address deep
     * inside one (not a block start) is found here. */
    for (r = atomic_load_explicit(&kt_bigs, memory_order_acquire); r; r = r->bnext)
        if (a - (uintptr_t)r->base < r->size)
            return r;
    return NULL;
}

/* Keep a region out of core dumps and out of forked children. */
static int kt_protect(void *base, size_t size)
{
#ifdef MADV_DONTDUMP
    (void)madvise(base, size, MADV_DONTDUMP);
#endif
    if (kt_max_fork_mode >= 2 && madvise(base, size, MADV_WIPEONFORK) == 0)
        return 2;
    if (madvise(base, size, MADV_DONTFORK) == 0)
        return 1;
    return 0;
}

/* size bytes of fresh memory aligned to align (a power of two, at least a page). */
static unsigned char *kt_map_aligned(size_t size, size_t align)
{
    size_t len = size + align;
    unsigned char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    unsigned char *base = (unsigned char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    size_t head = (size_t)(base - raw);
    if (head)
        munmap(raw, head);
    if (len - head - size)
        munmap(base + size, len - head - size);
    return base;
}

/* A new region: cls >= 0 an arena of that class, -1 a large region of size bytes.
 * Called with the lock held. */
static struct kt_region *kt_map(size_t size, int cls)
{
    unsigned char *base;
    if (cls >= 0) {
        base = kt_map_aligned(KT_ARENA_SIZE, KT_ARENA_SIZE);
    } else {
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED)
            base = NULL;
    }
    if (!base)
        return NULL;
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
    memset(r, 0, sizeof(*r));
    r->base = base;
    r->size = size;
    r->cls = cls;
    r->gen = kt_gen;
    r->fork_mode = kt_protect(base, size);
    r->locked = mlock(base, size) == 0;
    r->next = kt_regions;
    kt_regions = r;
    size_t b = kt_bucket((uintptr_t)base);
    r->hnext = atomic_load_explicit(&kt_hash[b], memory_order_relaxed);
    if (cls < 0) {
        r->bnext = atomic_load_explicit(&kt_bigs, memory_order_relaxed);
        atomic_store_explicit(&kt_bigs, r, memory_order_release);
    }
    atomic_store_explicit(&kt_hash[b], r, memory_order_release);
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
                struct kt_region *r = kt_map(KT_ARENA_SIZE, c);
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
        size_t size = (n + pg - 1) / pg * pg;
        struct kt_region **pp = &kt_big_free_list;
        while (*pp && (*pp)->size != size)
            pp = &(*pp)->free_next;
        struct kt_region *r = *pp;
        if (r) {
            *pp = r->free_next;
            r->free_next = NULL;
        } else if (!(r = kt_map(size, -1))) {
            goto out;
        }
        r->in_use = 1;
        p = r->base;
        kt_live += size;
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

void kt_secure_release(void *p)
{
    uintptr_t a = (uintptr_t)p;
    struct kt_region *r;
    if (!p)
        return;
    pthread_mutex_lock(&kt_lock);
    r = kt_find(a);
    if (kt_shut || !r || r->lost)
        goto out;
    /* Blocks of an earlier fork generation are wiped but not reused: their pages
     * are not locked in this process. */
    int reuse = r->gen == kt_gen;
    if (r->cls >= 0) {
        size_t csize = (size_t)KT_MIN_CLASS << r->cls;
        if ((a - (uintptr_t)r->base) & (csize - 1))
            goto out; /* not a block start: not ours to free */
        kt_wipe(p, csize);
        if (reuse) {
            struct kt_free_block *b = p;
            b->next = kt_free[r->cls];
            kt_free[r->cls] = b;
        }
        kt_live -= csize;
    } else {
        if (p != r->base || !r->in_use)
            goto out;
        kt_wipe(p, r->size);
        r->in_use = 0;
        if (reuse) {
            r->free_next = kt_big_free_list;
            kt_big_free_list = r;
        }
        kt_live -= r->size;
    }
out:
    pthread_mutex_unlock(&kt_lock);
}

void kt_secure_free(void *p, size_t n)
{
    (void)n;
    kt_secure_release(p);
}

int kt_secure_is_locked(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    int locked = 0;
    pthread_mutex_lock(&kt_lock);
    struct kt_region *r = kt_find(a);
    if (r && !r->lost && n <= r->size - (a - (uintptr_t)r->base))
        locked = r->locked;
    pthread_mutex_unlock(&kt_lock);
    return locked;
}

int kt_secure_fork_mode(const void *p)
{
    struct kt_region *r = p ? kt_find((uintptr_t)p) : NULL;
    return r ? r->fork_mode : -1;
}

int kt_secure_set_fork_mode(int mode)
{
    pthread_mutex_lock(&kt_lock);
    int old = kt_max_fork_mode;
    kt_max_fork_mode = mode >= 2 ? 2 : 1;
    /* Blocks handed out from now on come from regions mapped under the new mode. */
    memset(kt_bump_left, 0, sizeof(kt_bump_left));
    memset(kt_free, 0, sizeof(kt_free));
    kt_big_free_list = NULL;
    pthread_mutex_unlock(&kt_lock);
    return old;
}

void kt_secure_wipe_all(void)
{
    pthread_mutex_lock(&kt_lock);
    for (struct kt_region *r = kt_regions; r; r = r->next)
        if (!r->lost)
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

/*
 * fork(): the lock is taken before and released after on both sides, so no
 * other thread can be halfway through the lists when the child is made (a child
 * forked then would find the lock held by a thread it does not have, forever).
 */
static void kt_fork_prepare(void)
{
    pthread_mutex_lock(&kt_lock);
}

static void kt_fork_parent(void)
{
    pthread_mutex_unlock(&kt_lock);
}

/* In the child: no inherited secret stays readable, and the allocator starts over
 * from new (locked) regions. */
static void kt_fork_child(void)
{
    kt_gen++;
    for (struct kt_region *r = kt_regions; r; r = r->next) {
        r->locked = 0; /* memory locks are not inherited */
        if (r->lost)
            continue;
        if (r->fork_mode == 1) {
            /* The parent's pages are not mapped here: put zero pages where they
             * were, so stale pointers and views read zeros instead of faulting. */
            void *q = mmap(r->base, r->size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (q == r->base) {
                r->fork_mode = kt_protect(q, r->size);
            } else {
                if (q != MAP_FAILED)
                    munmap(q, r->size);
                r->lost = 1;
            }
        } else if (r->fork_mode == 0) {
            kt_wipe(r->base, r->size);
        }
    }
    /* The free lists run through inherited blocks: forget them. */
    memset(kt_free, 0, sizeof(kt_free));
    memset(kt_bump_left, 0, sizeof(kt_bump_left));
    kt_big_free_list = NULL;
    pthread_mutex_unlock(&kt_lock);
}

__attribute__((constructor)) static void kt_secmem_init(void)
{
    pthread_atfork(kt_fork_prepare, kt_fork_parent, kt_fork_child);
}
