"""The ktctl dispatcher: family words go to their module, with the words after them."""

from __future__ import annotations

import sys
import types

import pytest

import keyring_types.cli as cli


def test_family_word_runs_that_module_with_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("kt_fake_family")

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kt_fake_family", fake)
    monkeypatch.setitem(cli.FAMILIES, "fakefam", "kt_fake_family")
    assert cli.main(["fakefam", "verb", "--json"]) == 7
    assert seen == [["verb", "--json"]]


def test_other_words_go_to_the_keyctl_verbs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("kt_fake_verbs")

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kt_fake_verbs", fake)
    monkeypatch.setattr(cli, "KEYCTL_VERBS", "kt_fake_verbs")
    assert cli.main(["rdescribe", "@s"]) == 0
    assert seen == [["rdescribe", "@s"]]


def test_a_family_verb_exits_1_on_oserror_and_2_on_usage(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import errno

    from keyring_types.cli.family import UsageError, run_verb
    from keyring_types.errors import error

    def failing(_: argparse.Namespace) -> int:
        raise error(errno.ENOKEY, "no such key in the test")

    def misused(_: argparse.Namespace) -> int:
        raise UsageError("--x needs --y")

    parser = argparse.ArgumentParser(prog="ktctl fam")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("fails").set_defaults(run=failing)
    verbs.add_parser("misused").set_defaults(run=misused)
    verbs.add_parser("ok").set_defaults(run=lambda _: 0)
    assert run_verb(parser, ["fails"]) == 1
    assert capsys.readouterr().err == "ktctl fam fails: no such key in the test\n"
    assert run_verb(parser, ["misused"]) == 2
    assert capsys.readouterr().err == "ktctl fam misused: --x needs --y\n"
    assert run_verb(parser, ["ok"]) == 0
    assert run_verb(parser, ["nope"]) == 2
