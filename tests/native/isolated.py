"""Run code in a fresh interpreter, so that a crash or a hang fails one test, not the whole run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_isolated(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``code`` (dedented) under ``python -c`` with the checkout on ``PYTHONPATH``; output captured."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
