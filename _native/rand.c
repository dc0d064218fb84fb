/* Buffered kernel CSPRNG output for new keys; see rand.h for the why. */
#define _GNU_SOURCE
#include "rand.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#define KT_RAND_POOL 4096

/* The page holds the bytes and, after them, how many are left: both are
 * zeroed in a forked child by MADV_WIPEONFORK, which leaves it empty. */
struct kt_rand_page {
    uint8_t bytes[KT_RAND_POOL];
    size_t left; /* unused bytes, at the end of bytes[] */
};

static struct kt_rand_page *kt_pool;
static pthread_mutex_t kt_rand_lock = PTHREAD_MUTEX_INITIALIZER;

static void kt_rand_forget(void)
{
    if (kt_pool) {
        OPENSSL_cleanse(kt_pool->bytes, sizeof(kt_pool->bytes));
        kt_pool->left = 0;
    }
}

/* Fork with the lock held, so that no other thread is halfway through the pool. */
static void kt_rand_prepare(void)
{
    pthread_mutex_lock(&kt_rand_lock);
}

static void kt_rand_parent(void)
{
    pthread_mutex_unlock(&kt_rand_lock);
}

static void kt_rand_child(void)
{
    kt_rand_forget();
    pthread_mutex_unlock(&kt_rand_lock);
}

static int kt_getrandom(uint8_t *out, size_t n)
{
    size_t done = 0;

    while (done < n) {
        ssize_t got = getrandom(out + done, n - done, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)got;
    }
    return 0;
}

static int kt_rand_setup(void)
{
    void *p = mmap(NULL, sizeof(struct kt_rand_page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return -1;
    (void)mlock(p, sizeof(struct kt_rand_page)); /* best effort, as secmem */
    (void)madvise(p, sizeof(struct kt_rand_page), MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
    (void)madvise(p, sizeof(struct kt_rand_page), MADV_WIPEONFORK);
#endif
    kt_pool = p;
    pthread_atfork(kt_rand_prepare, kt_rand_parent, kt_rand_child);
    return 0;
}

/* Copy n bytes out of the pool, refilling it as needed; the lock is held. */
static int kt_rand_take(uint8_t *out, size_t n)
{
    while (n) {
        if (kt_pool->left == 0) {
            if (kt_getrandom(kt_pool->bytes, KT_RAND_POOL))
                return -1;
            kt_pool->left = KT_RAND_POOL;
        }
        size_t k = n < kt_pool->left ? n : kt_pool->left;
        uint8_t *src = kt_pool->bytes + (KT_RAND_POOL - kt_pool->left);
        memcpy(out, src, k);
        OPENSSL_cleanse(src, k); /* each byte is handed out once */
        kt_pool->left -= k;
        out += k;
        n -= k;
    }
    return 0;
}

int kt_rand_fill2(uint8_t *iv, size_t ivlen, uint8_t *data, size_t n)
{
    int rc = -1;

    /* A NULL destination (a SecretBuffer wiped by another thread between the
     * caller's check and its call reaches C as NULL) is refused, not written. */
    if ((!iv && ivlen) || (!data && n)) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&kt_rand_lock);
    if (kt_pool || kt_rand_setup() == 0)
        rc = kt_rand_take(iv, ivlen) || kt_rand_take(data, n) ? -1 : 0;
    pthread_mutex_unlock(&kt_rand_lock);
    return rc;
}

int kt_rand_fill(uint8_t *out, size_t n)
{
    return kt_rand_fill2(out, n, NULL, 0);
}
