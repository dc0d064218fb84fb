"""Every Python code block in README.md and docs/*.md runs, as the page reads.

How a page is run
    The ```` ```python ```` blocks of one page run in order in one namespace (a
    later block may use the names an earlier one made, as a reader would), in a
    fresh interpreter whose working directory and ``KEYRING_TYPES_HOME`` are
    private temporary directories.  A traceback names the page and its line.

    Every page runs twice: once where no TPM is reachable
    (``KEYRING_TYPES_TPM2_TCTI`` names a closed port) and once with a private
    swtpm as ``KEYRING_TYPES_TPM2_TCTI`` that has an ECC P-256 storage primary
    at 0x81000001 (what the "Starting swtpm" section of docs/tpm2.md makes).
    So a block that does not say it needs a TPM must work with and without one.

Marking a block that needs something
    An HTML comment on the line(s) just above the fence (invisible on the
    rendered page) says what the block needs and why::

        <!-- needs: tpm (seals under the storage primary at 0x81000001) -->
        ```python

    Needs, comma-separated, each with an optional reason in parentheses:

    ``tpm``
        runs only in the swtpm run (skipped in the run without a TPM);
    ``kernel keyring``
        runs only where ``/proc/keys`` exists (else the page is reported as
        skipped, or failed under ``CI=true``).

    Any other need is an error here, so a typo cannot hide a block.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import kernel_keyring_reachable, require

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

KNOWN_NEEDS = frozenset({"tpm", "kernel keyring"})
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*needs:\s*(?P<body>.*?)\s*-->\s*$")
_NEED = re.compile(r"\s*(?P<name>[^(),\s][^(),]*?)\s*(?:\((?P<why>[^)]*)\))?\s*(?:,|$)")


@attrs.frozen
class Block:
    """One fenced Python block: where it is, what it needs, its source."""

    page: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    source: str
    needs: frozenset[str]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse_needs(body: str, where: str) -> frozenset[str]:
    """The need names in a ``<!-- needs: ... -->`` body; unknown ones fail the test."""
    names: set[str] = set()
    pos = 0
    while pos < len(body):
        m = _NEED.match(body, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"{where}: cannot read the needs marker {body!r}")
        names.add(m["name"])
        pos = m.end()
    unknown = names - KNOWN_NEEDS
    if unknown:
        raise ValueError(f"{where}: unknown need(s) {sorted(unknown)}; known: {sorted(KNOWN_NEEDS)}")
    return frozenset(names)


def extract(text: str, page: str) -> list[Block]:
    """The Python blocks of a Markdown page, with the needs marked above each."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, info, start = m["fence"], m["info"].strip(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence[0] * len(fence)) and lines[i].strip().strip(fence[0]) == ""
        ):
            body.append(lines[i][len(m["indent"]) :] if lines[i].startswith(m["indent"]) else lines[i])
            i += 1
        i += 1  # the closing fence
        lang = info.split()[0].lower() if info else ""
        if lang not in ("python", "py", "python3"):
            continue
        needs: frozenset[str] = frozenset()
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        while j >= 0 and (marker := _MARKER.match(lines[j])):
            needs |= parse_needs(marker["body"], f"{page}:{j + 1}")
            j -= 1
        blocks.append(Block(page, start + 1, "\n".join(body) + "\n", needs))
    return blocks


def page_blocks(path: Path) -> list[Block]:
    return extract(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


# Runs in the child interpreter: the blocks of one page in one namespace, each
# compiled under the page's name and padded so tracebacks give the page's lines.
_DRIVER = r"""
import json, sys, traceback
blocks = json.load(sys.stdin)
ns = {"__name__": "__docs__"}
for b in blocks:
    code = compile("\n" * b["line"] + b["source"], b["page"], "exec")
    try:
        exec(code, ns)
    except BaseException:
        print(f"--- the block at {b['page']}:{b['line']} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_blocks(blocks: list[Block], env: dict[str, str], cwd: Path, timeout: float = 120.0) -> None:
    """Run ``blocks`` in order in one fresh interpreter; fail with its output if one raises."""
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER],
        input=json.dumps([attrs.asdict(b, filter=lambda a, _v: a.name != "needs") for b in blocks]),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"{proc.stderr}\n{proc.stdout}".strip(), pytrace=False)


def snippet_env(home: Path, tcti: str) -> dict[str, str]:
    """The child's environment: a private state directory, the given TPM, this checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRING_TYPES_")}
    env["KEYRING_TYPES_HOME"] = str(home)
    env["KEYRING_TYPES_TPM2_TCTI"] = tcti
    env["TSS2_LOG"] = "all+none"  # the errno is the answer; tpm2-tss' warnings are noise here
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture
def state_home(tmp_path: Path) -> Path:
    home = tmp_path / "state"
    home.mkdir(mode=0o700)
    return home


def _runnable(blocks: list[Block], *, with_tpm: bool) -> tuple[list[Block], list[str]]:
    """The blocks this run executes, and why the others are left out where that is a skip."""
    run: list[Block] = []
    missing: list[str] = []
    have_keyring = kernel_keyring_reachable()
    for b in blocks:
        if "tpm" in b.needs and not with_tpm:
            continue  # the swtpm run covers it
        if "kernel keyring" in b.needs and not have_keyring:
            missing.append(f"{b.where} (the kernel keyring)")
            continue
        run.append(b)
    return run, missing


def _page_ids() -> Iterator[object]:
    for path in PAGES:
        rel = str(path.relative_to(ROOT))
        try:
            blocks = page_blocks(path)
        except ValueError:
            yield pytest.param(path, False, id=f"{rel}-markers")  # the test re-reads it and fails
            continue
        if any("tpm" not in b.needs for b in blocks):
            yield pytest.param(path, False, id=f"{rel}-no-tpm")
        if blocks:
            yield pytest.param(path, True, id=f"{rel}-swtpm")


@pytest.mark.parametrize(("path", "with_tpm"), list(_page_ids()))
def test_page_snippets_run(path: Path, with_tpm: bool, state_home: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    blocks, missing = _runnable(page_blocks(path), with_tpm=with_tpm)
    if with_tpm:
        sim = request.getfixturevalue("swtpm")
        from swtpm_util import create_primary

        create_primary(sim.tcti)
        tcti = sim.tcti
    else:
        tcti = f"swtpm:host=127.0.0.1,port={_closed_port()}"
    work = tmp_path / "cwd"
    work.mkdir()
    run_blocks(blocks, snippet_env(state_home, tcti), work)
    require(not missing, "what these blocks need: " + ", ".join(missing))


def test_every_page_is_collected() -> None:
    # The pages the docs link to are all here, and each has something to run.
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"README.md", "docs/user-guide.md", "docs/trusted.md", "docs/tpm2.md", "docs/rpmb.md"} <= names
    for name in ("README.md", "docs/user-guide.md", "docs/trusted.md", "docs/tpm2.md", "docs/rpmb.md"):
        assert page_blocks(ROOT / name), f"{name} has no Python block"


def test_extract_reads_fences_and_markers() -> None:
    page = "\n".join(
        [
            "text",
            "```python",
            "a = 1",
            "```",
            "",
            "<!-- needs: tpm (seals under 0x81000001), kernel keyring -->",
            "",
            "```python",
            "b = a",
            "```",
            "```sh",
            "echo no",
            "```",
            "````python",
            "```",
            "````",
        ]
    )
    blocks = extract(page, "p.md")
    assert [(b.line, b.source, b.needs) for b in blocks] == [
        (2, "a = 1\n", frozenset()),
        (8, "b = a\n", frozenset({"tpm", "kernel keyring"})),
        (14, "```\n", frozenset()),
    ]


def test_unknown_need_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown need"):
        extract("<!-- needs: a TEE -->\n```python\npass\n```\n", "p.md")


def test_failing_block_fails_with_its_page_line(state_home: Path, tmp_path: Path) -> None:
    blocks = [Block("docs/x.md", 3, "a = 1\n", frozenset()), Block("docs/x.md", 10, "\nb = a + missing\n", frozenset())]
    with pytest.raises(pytest.fail.Exception) as info:
        run_blocks(blocks, snippet_env(state_home, "device:/nonexistent"), tmp_path)
    assert 'File "docs/x.md", line 12' in str(info.value)
    assert "NameError" in str(info.value)


def _section_block(text: str, heading: str, lang: str) -> str:
    """The first ``lang`` block under ``heading`` (up to the next heading of any level)."""
    section = text.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"\n#{1,6} ", section, maxsplit=1)[0]
    m = re.search(rf"^```{lang}\n(.*?)^```$", section, re.S | re.M)
    assert m is not None, f"no {lang} block under {heading!r}"
    return m[1]


def test_tpm2_starting_swtpm_recipe_works(tmp_path: Path) -> None:
    """docs/tpm2.md "Starting swtpm", run as written (on free ports, in a private
    HOME): a trusted key then seals and loads through KEYRING_TYPES_TPM2_TCTI."""
    import shutil

    for tool in ("swtpm", "swtpm_ioctl", "tpm2_startup", "tpm2_createprimary", "tpm2_evictcontrol", "tpm2_flushcontext"):
        require(shutil.which(tool) is not None, f"{tool} (Debian packages swtpm swtpm-tools tpm2-tools)")
    recipe = _section_block((ROOT / "docs" / "tpm2.md").read_text(encoding="utf-8"), "## Starting swtpm", "sh")
    assert "port=2321" in recipe and "port=2322" in recipe and "KEYRING_TYPES_TPM2_TCTI=" in recipe
    from swtpm_util import _free_port_pair

    port = _free_port_pair("127.0.0.1")  # the swtpm TCTI finds the control port at port + 1
    ctrl = port + 1
    recipe = recipe.replace("2321", str(port)).replace("2322", str(ctrl))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYRING_TYPES_", "TPM2TOOLS_"))}
    env.update(HOME=str(home), TSS2_LOG="all+none")
    seal = (
        "import keyring_types as kt\n"
        "ks = kt.Keyspace()\n"
        "k = ks.add_key('trusted', 'kmk', 'new 32 source=tpm2 keyhandle=0x81000001', '@s')\n"
        "ks.add_key('trusted', 'kmk2', b'load ' + k.read(), '@s')\n"
        "print('sealed and loaded')\n"
    )
    state = home / "kt-state"
    state.mkdir(mode=0o700)
    script = f"set -e\n{recipe}\nKEYRING_TYPES_HOME={state} {sys.executable} -c \"$SEAL\"\n"
    env["SEAL"] = seal
    env["PYTHONPATH"] = str(ROOT)
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=home, env=env, capture_output=True, text=True, timeout=120)
    finally:
        # The recipe's own way to stop it; the daemon's state directory is under tmp_path.
        subprocess.run(["swtpm_ioctl", "--tcp", f"127.0.0.1:{ctrl}", "-s"], capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sealed and loaded" in proc.stdout
