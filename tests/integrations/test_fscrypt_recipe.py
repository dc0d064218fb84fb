"""docs/fscrypt.md's recipe (trusted key -> encrypted directory), run as written.

The three ``sh`` blocks marked ``<!-- fscrypt-recipe: setup|lock|unlock -->`` run
with bash on a loop-mounted ``ext4 -O encrypt`` as ``$MNT``, each in a new
process, with the host trust source and a private ``KEYRING_TYPES_HOME``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_fscrypt_ext4 import _make_fs, _open_dir, _require_loop_fs, drop_caches

pytestmark = [pytest.mark.root, pytest.mark.kernel]

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"<!-- fscrypt-recipe: (?P<name>\w+) -->\n```sh\n(?P<body>.*?)^```$", re.S | re.M)


def recipe_blocks() -> dict[str, str]:
    text = (ROOT / "docs" / "fscrypt.md").read_text(encoding="utf-8")
    blocks = {m["name"]: m["body"] for m in _BLOCK.finditer(text)}
    assert set(blocks) == {"setup", "lock", "unlock"}, sorted(blocks)
    return blocks


@pytest.fixture
def mnt() -> Iterator[Path]:
    _require_loop_fs()
    with _open_dir() as base:
        yield from _make_fs(base, "recipe", ["-O", "encrypt"])


def run(body: str, mnt: Path, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRING_TYPES_")}
    env.update(
        MNT=str(mnt),
        KEYRING_TYPES_HOME=str(home),
        KEYRING_TYPES_TRUST_SOURCE="host",
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",  # python3 is this venv's
    )
    proc = subprocess.run(["bash", "-ec", body], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_recipe_runs_as_written(mnt: Path, tmp_path: Path) -> None:
    blocks = recipe_blocks()
    home = tmp_path / "home"
    run(blocks["setup"], mnt, home)
    vault = mnt / "vault"
    (vault / "notes.txt").write_text("only with the key\n")
    run(blocks["lock"], mnt, home)
    drop_caches()
    [name] = os.listdir(vault)
    assert name != "notes.txt"  # a ciphertext name
    run(blocks["unlock"], mnt, home)
    assert (vault / "notes.txt").read_text() == "only with the key\n"
    run(blocks["lock"], mnt, home)  # leave no key behind
