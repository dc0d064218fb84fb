"""cffi build script for ``keyring_types.bindings._secmem`` (secret memory, ct compare)."""


from cffi import FFI


ffibuilder = FFI()
ffibuilder.cdef(
    """
    void *kt_secure_alloc(size_t n);
    void kt_secure_free(void *p, size_t n);
    void kt_wipe(void *p, size_t n);
    int kt_ct_memcmp(const void *a, const void *b, size_t n);
    int kt_secure_is_locked(const void *p, size_t n);
    void kt_secure_wipe_all(void);
    size_t kt_secure_live_bytes(void);
    """
)
ffibuilder.set_source(
    "keyring_types.bindings._secmem",
    '#include "secmem.h"',
    sources=["_native/secmem.c"],
    include_dirs=["_native"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
