/*
 * LD_PRELOAD harness: lets an unmodified program (mmc-utils' `mmc rpmb ...`, our
 * own MMC transport) drive the emulated RPMB device as if it were
 * /dev/mmcblkNrpmb.
 *
 * Environment (printed by `ktctl rpmb harness-env`):
 *   KT_RPMB_HARNESS_DEVICE  the path the program opens (need not exist)
 *   KT_RPMB_HARNESS_SOCKET  the emulator's Unix socket
 *
 * open()/open64()/openat()/openat64() of that path connect to the socket and
 * return the connected descriptor; ioctl(MMC_IOC_CMD / MMC_IOC_MULTI_CMD) on it
 * sends the command list in the emulator's wire format (see
 * keyring_types/rpmb/wire.py) and copies the read commands' data back into the
 * caller's buffers; close() forgets it.  dup()/dup2()/dup3()/fcntl(F_DUPFD,
 * F_DUPFD_CLOEXEC) of it give another descriptor of the same device (and a
 * descriptor that dup2/dup3 replaces stops being one).  Every other call goes to
 * libc.  A dead
 * emulator gives the caller an errno (ECONNREFUSED at open, ECONNRESET or
 * ETIMEDOUT at ioctl), never a hang.
 *
 * Built by setup.py as a plain shared library (not a Python extension).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/ioctl.h>
#include <linux/major.h>
#include <linux/mmc/ioctl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define KT_OP_MMC 1u
#define KT_MAX_FDS 1024
#define KT_TIMEOUT_S 30
#define KT_MAX_MESSAGE (16u * 1024u * 1024u + 64u * 1024u)

static unsigned char ours[KT_MAX_FDS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef int (*close_fn)(int);
typedef int (*dup_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*fcntl_fn)(int, int, ...);

static void *next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

/* The absolute, lexically normalised form of path (relative to cwd). */
static int absolute(const char *path, char *out, size_t size)
{
    char buf[PATH_MAX * 2];
    if (path[0] == '/') {
        if (strlen(path) >= sizeof(buf))
            return -1;
        strcpy(buf, path);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)))
            return -1;
        if ((size_t)snprintf(buf, sizeof(buf), "%s/%s", cwd, path) >= sizeof(buf))
            return -1;
    }
    /* Drop "." and empty components and resolve ".." without touching the file system. */
    size_t n = 0;
    out[0] = '\0';
    for (char *save = NULL, *tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (!strcmp(tok, "."))
            continue;
        if (!strcmp(tok, "..")) {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--;
            out[n] = '\0';
            continue;
        }
        size_t len = strlen(tok);
        if (n + 1 + len + 1 > size)
            return -1;
        out[n++] = '/';
        memcpy(out + n, tok, len);
        n += len;
        out[n] = '\0';
    }
    if (n == 0) {
        if (size < 2)
            return -1;
        strcpy(out, "/");
    }
    return 0;
}

static int is_device(const char *path)
{
    const char *dev = getenv("KT_RPMB_HARNESS_DEVICE");
    char a[PATH_MAX], b[PATH_MAX];
    if (!dev || !path || absolute(dev, a, sizeof(a)) || absolute(path, b, sizeof(b)))
        return 0;
    return strcmp(a, b) == 0;
}

static int connect_emulator(void)
{
    const char *sock = getenv("KT_RPMB_HARNESS_SOCKET");
    struct sockaddr_un sa;
    if (!sock || strlen(sock) >= sizeof(sa.sun_path)) {
        errno = ENXIO;
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (fd >= KT_MAX_FDS) {
        /* Beyond the table of our descriptors: its ioctls would go to the kernel (ENOTTY). */
        ((close_fn)next("close"))(fd);
        errno = EMFILE;
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, sock);
    struct timeval tv = {KT_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        ((close_fn)next("close"))(fd);
        errno = e;
        return -1;
    }
    pthread_mutex_lock(&lock);
    ours[fd] = 1;
    pthread_mutex_unlock(&lock);
    return fd;
}

static int is_ours(int fd)
{
    int r = 0;
    if (fd >= 0 && fd < KT_MAX_FDS) {
        pthread_mutex_lock(&lock);
        r = ours[fd];
        pthread_mutex_unlock(&lock);
    }
    return r;
}

/* --- the wire: u32 length | body, little endian (x86/arm hosts: native order) --- */

static int send_all(int fd, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                errno = ETIMEDOUT;
            else if (errno == EPIPE)
                errno = ECONNRESET;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int recv_all(int fd, void *p, size_t n)
{
    unsigned char *c = p;
    while (n) {
        ssize_t r = recv(fd, c, n, 0);
        if (r == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                errno = ETIMEDOUT;
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* An exchange failed part-way (timeout, reset, short reply): a late or partial reply may
 * still be in the stream, so the connection is shut down rather than read out of step by
 * the next ioctl.  Keeps errno; returns -1. */
static int out_of_step(int fd)
{
    int e = errno;
    shutdown(fd, SHUT_RDWR);
    errno = e;
    return -1;
}

/* Relay n commands; 0 or -1 with errno. */
static int relay(int fd, struct mmc_ioc_cmd *cmds, uint64_t n)
{
    if (n == 0 || n > MMC_IOC_MAX_CMDS) {
        errno = EINVAL;
        return -1;
    }
    size_t len = 8, want = 4;
    for (uint64_t i = 0; i < n; i++) {
        size_t size = (size_t)cmds[i].blksz * cmds[i].blocks;
        if (size > MMC_IOC_MAX_BYTES) {
            errno = EOVERFLOW;
            return -1;
        }
        len += 16 + (cmds[i].write_flag ? size : 0);
        if (!cmds[i].write_flag)
            want += size;
    }
    if (len > KT_MAX_MESSAGE) {
        errno = EOVERFLOW;
        return -1;
    }
    unsigned char *msg = malloc(4 + len);
    if (!msg)
        return -1;
    unsigned char *p = msg;
    put32(p, (uint32_t)len);
    put32(p + 4, KT_OP_MMC);
    put32(p + 8, (uint32_t)n);
    p += 12;
    for (uint64_t i = 0; i < n; i++) {
        size_t size = (size_t)cmds[i].blksz * cmds[i].blocks;
        put32(p, (uint32_t)cmds[i].write_flag);
        put32(p + 4, cmds[i].opcode);
        put32(p + 8, cmds[i].blocks);
        put32(p + 12, cmds[i].blksz);
        p += 16;
        if (cmds[i].write_flag && size) {
            memcpy(p, (const void *)(uintptr_t)cmds[i].data_ptr, size);
            p += size;
        }
    }
    int rc = send_all(fd, msg, 4 + len);
    /* A key-programming frame carries the key: no copy of it is left in the heap. */
    explicit_bzero(msg, 4 + len);
    free(msg);
    if (rc)
        return out_of_step(fd);
    unsigned char head[8];
    if (recv_all(fd, head, 8))
        return out_of_step(fd);
    uint32_t rlen = get32(head), err = get32(head + 4);
    if (err && rlen == 4) {
        errno = (int)err;
        return -1;
    }
    if (err || rlen != want) {
        /* Not the reply this list asks for: what is left of it would answer the next ioctl. */
        shutdown(fd, SHUT_RDWR);
        errno = EPROTO;
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (cmds[i].write_flag)
            continue;
        size_t size = (size_t)cmds[i].blksz * cmds[i].blocks;
        if (recv_all(fd, (void *)(uintptr_t)cmds[i].data_ptr, size))
            return out_of_step(fd);
    }
    return 0;
}

/* --- the intercepted calls --- */

#define OPEN_BODY(call)                         \
    mode_t mode = 0;                            \
    if (flags & (O_CREAT | O_TMPFILE)) {        \
        va_list ap;                             \
        va_start(ap, flags);                    \
        mode = (mode_t)va_arg(ap, int);         \
        va_end(ap);                             \
    }                                           \
    if (is_device(path))                        \
        return connect_emulator();              \
    return call;

int open(const char *path, int flags, ...)
{
    OPEN_BODY(((open_fn)next("open"))(path, flags, mode))
}

int open64(const char *path, int flags, ...)
{
    OPEN_BODY(((open_fn)next("open64"))(path, flags, mode))
}

int openat(int dirfd, const char *path, int flags, ...)
{
    /* Relative paths under another directory fd are not the device (the harness
     * matches paths as the program names them). */
    if (dirfd != AT_FDCWD && path[0] != '/') {
        mode_t mode = 0;
        if (flags & (O_CREAT | O_TMPFILE)) {
            va_list ap;
            va_start(ap, flags);
            mode = (mode_t)va_arg(ap, int);
            va_end(ap);
        }
        return ((openat_fn)next("openat"))(dirfd, path, flags, mode);
    }
    OPEN_BODY(((openat_fn)next("openat"))(dirfd, path, flags, mode))
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    if (dirfd != AT_FDCWD && path[0] != '/') {
        mode_t mode = 0;
        if (flags & (O_CREAT | O_TMPFILE)) {
            va_list ap;
            va_start(ap, flags);
            mode = (mode_t)va_arg(ap, int);
            va_end(ap);
        }
        return ((openat_fn)next("openat64"))(dirfd, path, flags, mode);
    }
    OPEN_BODY(((openat_fn)next("openat64"))(dirfd, path, flags, mode))
}

int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (!is_ours(fd))
        return ((ioctl_fn)next("ioctl"))(fd, request, arg);
    if (request == MMC_IOC_CMD)
        return relay(fd, (struct mmc_ioc_cmd *)arg, 1);
    if (request == MMC_IOC_MULTI_CMD) {
        struct mmc_ioc_multi_cmd *m = arg;
        return relay(fd, m->cmds, m->num_of_cmds);
    }
    errno = ENOTTY;
    return -1;
}

/* A successful duplication of oldfd onto newfd: newfd is the device exactly when oldfd
 * is (it may have been the device before and be something else now).  A copy of the
 * device beyond the table is closed again: its ioctls would reach the kernel. */
static int duplicated(int oldfd, int newfd)
{
    if (newfd < 0)
        return newfd;
    int dev = is_ours(oldfd);
    if (newfd >= KT_MAX_FDS) {
        if (dev) {
            ((close_fn)next("close"))(newfd);
            errno = EMFILE;
            return -1;
        }
        return newfd;
    }
    pthread_mutex_lock(&lock);
    ours[newfd] = (unsigned char)dev;
    pthread_mutex_unlock(&lock);
    return newfd;
}

int dup(int oldfd)
{
    return duplicated(oldfd, ((dup_fn)next("dup"))(oldfd));
}

int dup2(int oldfd, int newfd)
{
    return duplicated(oldfd, ((dup2_fn)next("dup2"))(oldfd, newfd));
}

int dup3(int oldfd, int newfd, int flags)
{
    return duplicated(oldfd, ((dup3_fn)next("dup3"))(oldfd, newfd, flags));
}

/* fcntl's third argument is an int or a pointer by command; both travel in one
 * register-sized slot, so it is taken as a pointer and passed on unchanged. */
#define FCNTL_BODY(name)                                                   \
    va_list ap;                                                            \
    va_start(ap, cmd);                                                     \
    void *arg = va_arg(ap, void *);                                        \
    va_end(ap);                                                            \
    fcntl_fn real = (fcntl_fn)next(name);                                  \
    if (!real) /* a libc without fcntl64 */                                \
        real = (fcntl_fn)next("fcntl");                                    \
    int rc = real(fd, cmd, arg);                                           \
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)                          \
        return duplicated(fd, rc);                                         \
    return rc;

int fcntl(int fd, int cmd, ...)
{
    FCNTL_BODY("fcntl")
}

/* glibc 2.28+: what programs built with 64-bit file offsets (CPython among them) call. */
int fcntl64(int fd, int cmd, ...)
{
    FCNTL_BODY("fcntl64")
}

int close(int fd)
{
    if (fd >= 0 && fd < KT_MAX_FDS) {
        pthread_mutex_lock(&lock);
        ours[fd] = 0;
        pthread_mutex_unlock(&lock);
    }
    return ((close_fn)next("close"))(fd);
}
