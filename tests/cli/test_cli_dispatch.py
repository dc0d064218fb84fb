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
