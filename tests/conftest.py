"""Shared fixtures.  Anything a test needs from the machine goes through ``require``:
it skips with a reason naming what is missing, except under ``CI=true``, where the
machine is known to have everything and a missing piece is a failure."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, missing: str) -> None:
    """Skip (or, in CI, fail) unless ``condition``; ``missing`` says what is absent."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must have {missing}, but it is missing", pytrace=False)
    pytest.skip(f"needs {missing}")


def kernel_keyring_reachable() -> bool:
    try:
        with open("/proc/keys"):
            return True
    except OSError:
        return False


@pytest.fixture
def need_root() -> None:
    require(os.geteuid() == 0, "root")


@pytest.fixture
def need_kernel_keyring() -> None:
    require(kernel_keyring_reachable(), "the kernel keyring (/proc/keys)")
