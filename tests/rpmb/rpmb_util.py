"""Helpers for the RPMB tests: an emulator process per test, a transport that alters replies."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from keyring_types.rpmb.emulator import spawn_emulator
from keyring_types.rpmb.transport import Transport
from keyring_types.rpmb.wire import DeviceInfo, MmcCmd

ROOT = Path(__file__).resolve().parents[2]


def need_harness() -> None:
    """Skip (fail under CI=true) unless the LD_PRELOAD harness library is built."""
    from conftest import require

    from keyring_types.rpmb.harness import library_path

    try:
        library_path()
    except OSError:
        require(False, "the built RPMB harness (python setup.py build_ext --inplace)")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this tree first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class Emulator:
    """A running emulator: ``sock``, ``state``, ``proc``; ``restart()`` and ``kill9()``."""

    def __init__(self, d: Path, args: tuple[str, ...]) -> None:
        self.sock = d / "s"
        self.state = d / "st"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = spawn_emulator(self.sock, self.state, *self.args, env=child_env())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def emulator(d: Path, *args: str) -> Iterator[Emulator]:
    """An emulator on ``d/s`` with state ``d/st`` and extra options ``args``; stopped afterwards."""
    emu = Emulator(d, args)
    try:
        yield emu
    finally:
        emu.stop()


class Spy(Transport):
    """Wraps a transport: records command lists and lets a test alter the replies."""

    def __init__(self, inner: Transport, alter: Callable[[list[MmcCmd], list[bytes]], list[bytes]] | None = None) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.readonly = inner.readonly
        self.calls: list[list[MmcCmd]] = []
        self.alter = alter
        self.fail_on: Callable[[list[MmcCmd]], OSError | None] | None = None

    def mmc(self, cmds: list[MmcCmd]) -> list[bytes]:
        self.calls.append(cmds)
        if self.fail_on is not None:
            exc = self.fail_on(cmds)
            if exc is not None:
                raise exc
        out = self.inner.mmc(cmds)
        return self.alter(cmds, out) if self.alter else out

    def info(self) -> DeviceInfo:
        return self.inner.info()

    def close(self) -> None:
        self.inner.close()
