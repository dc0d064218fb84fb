"""Native calls never trust a caller's length (issue 12), checked in a separate interpreter.

``native_random_into(ptr, n)`` and ``native_export(..., data, datalen)`` used to hand
C a pointer and a length on trust: a length past the buffer made C write or read
out of bounds (SIGSEGV, or silent damage to whatever lay behind).  The bindings
wrapper now checks every length against the buffer it describes.  The cases run
in a child interpreter so that a crash fails this test rather than the test run.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CASES = """
import errno, os
from keyring_types.bindings import encrypted as nb
from keyring_types.secret import SecretBuffer
from keyring_types.types import encrypted_blob as eb

master, iv = os.urandom(32), os.urandom(16)
header = eb.datablob_header("default", "user:kmk", "4096")
small = SecretBuffer(32)
big_n = 1 << 40
cases = {
    "random_into: a length past a SecretBuffer": lambda: nb.random_into(small, 1 << 24),
    "random_into: a huge length": lambda: nb.random_into(small, big_n),
    "random_into: a length past a bytearray": lambda: nb.random_into(bytearray(16), 1 << 24),
    "random_into: an offset past the end": lambda: nb.random_into(small, 16, offset=20),
    "random_into: a negative length": lambda: nb.random_into(small, -1),
    "random_into: a raw pointer has no length": lambda: nb.random_into(small.address, 32),
    "random_into: read-only bytes": lambda: nb.random_into(b"immutable bytes!", 16),
    "seal_export: data shorter than datalen": lambda: nb.seal_export(master, header, iv, bytes(10), 4096),
    "seal_export: a SecretBuffer shorter than datalen": lambda: nb.seal_export(master, header, iv, small, 4096),
    "seal_export: an offset past the data": lambda: nb.seal_export(master, header, iv, small, 32, offset=1),
    "seal_export: a raw pointer as master": lambda: nb.seal_export(small.address, header, iv, bytes(32), 32),
    "seal_export: a raw pointer as data": lambda: nb.seal_export(master, header, iv, small.address, 32),
    "seal_export: a short IV": lambda: nb.seal_export(master, header, iv[:4], bytes(32), 32),
}
for name, case in cases.items():
    try:
        case()
    except OSError as e:
        print(e.errno, name)
    else:
        print("no error", name)
print("small intact", small.tobytes() == bytes(32))
# A buffer wiped by another thread between a wrapper's check and its call reaches
# C as NULL: the random source refuses it.
from keyring_types.bindings._encrypted import ffi, lib
rc = lib.kt_rand_fill2(ffi.new("char[16]"), 16, ffi.NULL, 32)
print("null refused", rc, ffi.errno == errno.EINVAL, lib.kt_rand_fill(ffi.NULL, 16))
"""


def test_lengths_past_a_buffer_are_einval_not_a_crash() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CASES)],
        check=False,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stdout.splitlines()
    assert lines[-2:] == ["small intact True", "null refused -1 True -1"]
    results = lines[:-2]
    assert len(results) == 13
    for line in results:
        assert line.startswith(f"{errno.EINVAL} "), line
