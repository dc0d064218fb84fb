"""cffi build script for ``keyring_types.bindings._keyctl`` (raw key-management syscalls)."""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    long kt_add_key(const char *type, const char *desc, const void *payload, size_t plen, int32_t ringid);
    long kt_request_key(const char *type, const char *desc, const char *callout, int32_t destringid);
    long kt_keyctl_int(int op, long a2, long a3, long a4, long a5);
    long kt_keyctl_buf(int op, int32_t id, void *buf, size_t buflen);
    long kt_keyctl_update(int32_t id, const void *payload, size_t plen);
    long kt_keyctl_search(int32_t ringid, const char *type, const char *desc, int32_t destringid);
    long kt_keyctl_join(const char *name);
    """
)
ffibuilder.set_source(
    "keyring_types.bindings._keyctl",
    '#include "keyctl.h"',
    sources=["_native/keyctl.c"],
    include_dirs=["_native"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
