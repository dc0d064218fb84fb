"""No message or repr ever holds payload bytes or option values (issue 12, "Secrets in messages").

Many bad (and some good) ``trusted`` and ``encrypted`` payloads carry a known
marker where a secret could sit: a password in ``blobauth=`` (or a mistyped
``blobauht=``), a hex key typed where the length goes, a plaintext, a blob, an
unknown option's name or value, a bare token.  Whatever happens, the marker
must not appear in the error's text, its repr, its chained causes, or the repr
of anything the parsers return.  Option names may appear; values never.

A master key's description (``user:NAME``) is a key's name, not a secret, and
is left out of the sweep.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyring_types as kt
from keyring_types.core.keytype import Preparsed
from keyring_types.trust import registry
from keyring_types.trust.options import parse_options
from keyring_types.types import encrypted as enc
from keyring_types.types import trusted as tr

#: A marker that is text, and one that is hex (so it also fits hex fields).
TEXT = "S3cr3tMarkerQ"
HEX = "5ec7e75ec7e7"
MARKERS = (TEXT.lower(), HEX)


def _clean(text: str, where: str) -> None:
    low = text.lower()
    for marker in MARKERS:
        assert marker not in low, f"{where} shows the secret: {text[:300]!r}"


def _check_exception(exc: BaseException, payload: object) -> None:
    assert isinstance(exc, OSError) and exc.errno, (payload, exc)
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        _clean(str(cur), f"str() of the error for {payload!r:.80}")
        _clean(repr(cur), f"repr() of the error for {payload!r:.80}")
        _clean(repr(cur.args), "the error's args")
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)


def trusted_payloads() -> list[str]:
    t, h = TEXT, HEX
    hexkey = (h * 12)[:64]
    return [
        f"new {hexkey}",  # a hex key typed where the length goes
        f"new {h}",
        f"new 32{t}",
        f"new {'9' * 4400}{h}",
        "new " + "9" * 4400,
        f"new 32 blobauht={t}",
        f"new 32 blobauth={t * 3}",
        f"new 32 blobauth={t}{t}{t}x",
        f"new 32 keyauth={t}",
        f"new 32 keyauth={(h * 4)[:40]}",
        f"new 32 {t}",
        f"new 32 {t}={t}",
        f"new 32 {hexkey}",
        f"new 32 source={t}",
        f"new 32 rng={t}",
        f"new 32 hash={t}",
        f"new 32 pcrinfo={t}",
        f"new 32 pcrinfo={h * 30}",
        f"new 32 pcrlock={t}",
        f"new 32 pcrlock={'9' * 4400}",
        f"new 32 pcrlock={'0' * 4400}{h}",
        f"new 32 keyhandle={t}",
        f"new 32 keyhandle=0x{h * 4}",
        f"new 32 policydigest={t}",
        f"new 32 policydigest={(h * 6)[:64]}",
        f"new 32 policyhandle={t}",
        f"new 32 migratable={t}",
        f"new 32 blobauth={h} blobauth={h}",
        f"new 32 source=host source={t}",
        f"load {t}",
        f"load {h * 3}",
        f"load {h * 3} blobauth={t}",
        f"load {'ab' * 600}{h}",
        f"{t} 32",
        f"{hexkey}",
        f"update {t}",
        f"update blobauth={t}",
        f"new\t32\t\t{t}",
        f"new 32 blobauth={t}\0{t}",
    ]


def encrypted_payloads() -> list[str]:
    t, h = TEXT, HEX
    hexkey = (h * 12)[:64]
    blob_len = 2 * (16 + 1 + 32 + 32)
    return [
        f"new default user:kmk {hexkey}",
        f"new user:kmk {hexkey}",
        f"new default user:kmk {'9' * 4400}{h}",
        f"new default user:kmk 32{t}",
        f"new default user:kmk 32 {hexkey}",  # plaintext while user data is off
        f"new default user:kmk 20 {h}",
        f"new default {t} 32",
        f"new {t} user:kmk 32",
        f"new default {hexkey} 32",
        f"{t} default user:kmk 32",
        f"{hexkey}",
        f"load default user:kmk 32 {t}",
        f"load default user:kmk 32 {h * 3}",
        f"load default user:kmk 32 {(h * 40)[:blob_len]}",  # the right length: an HMAC failure
        f"load default user:kmk 32 {(h * 40)[: blob_len - 2]}{t[:2]}",
        f"load default user:kmk {hexkey} {h}",
        f"load user:kmk {hexkey}",
        f"new enc32 user:kmk {h}",
        f"new ecryptfs user:kmk 32 {hexkey}",
        f"update {t}",
        f"update default {hexkey}",
        f"new default user:kmk  {hexkey}",
        f"new default user:kmk 32\0{t}",
    ]


@pytest.fixture
def ks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[kt.Keyspace]:
    monkeypatch.setenv("KEYRING_TYPES_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(registry.ENV_SOURCE, raising=False)
    monkeypatch.setenv("KEYRING_TYPES_TPM2_TCTI", "device:/nonexistent/tpmrm9")  # no TPM: default is host
    registry.clear_cache()
    space = kt.Keyspace()
    space.add_key("user", "kmk", os.urandom(32), "@s")
    yield space
    registry.clear_cache()


def _sweep(ks: kt.Keyspace, type_name: str, payloads: list[str], existing: kt.Key) -> int:
    failures = 0
    for i, text in enumerate(payloads):
        for payload in (text, text.encode()):
            # add_key (instantiate) and keyctl update of an existing key.
            for op in ("add", "update"):
                try:
                    if op == "add":
                        key = ks.add_key(type_name, f"{type_name}-{i}-{type(payload).__name__}", payload, "@s")
                    else:
                        existing.update(payload)
                        key = existing
                except OSError as exc:
                    _check_exception(exc, payload)
                    failures += 1
                else:
                    _clean(repr(key), "a key's repr")
                    _clean(key.describe(), "describe()")
                    _clean(repr(ks._world.keys[key.serial].payload), "the payload's repr")
            # The parsers and preparse directly.
            parsers = (tr.parse_payload,) if type_name == "trusted" else (enc.parse_payload,)
            for fn in (*parsers, kt.core.keytype.lookup_key_type(type_name).preparse):
                try:
                    result = fn(payload)
                except OSError as exc:
                    _check_exception(exc, payload)
                else:
                    _clean(repr(result), f"repr of {getattr(fn, '__name__', fn)}()")
                    if isinstance(result, Preparsed):
                        _clean(repr(result.payload), "a preparsed payload's repr")
    return failures


def test_trusted_payloads_never_echo_secrets(ks: kt.Keyspace) -> None:
    existing = ks.add_key("trusted", "existing", "new 32", "@s")
    failures = _sweep(ks, "trusted", trusted_payloads(), existing)
    assert failures > len(trusted_payloads())  # the sweep mostly exercises errors


def test_encrypted_payloads_never_echo_secrets(ks: kt.Keyspace) -> None:
    existing = ks.add_key("encrypted", "existing", "new default user:kmk 32", "@s")
    old = enc.set_user_decrypted_data(False)
    try:
        failures = _sweep(ks, "encrypted", encrypted_payloads(), existing)
        enc.set_user_decrypted_data(True)
        failures += _sweep(ks, "encrypted", encrypted_payloads(), existing)
    finally:
        enc.set_user_decrypted_data(old)
        enc.parse_cache_clear()
    assert failures > len(encrypted_payloads())


def test_option_reprs_show_names_not_values() -> None:
    p = parse_options(f"keyauth={'ab' * 20} blobauth={TEXT} source=host rng=kernel pcrlock=7 keyhandle=0x{HEX}")
    for text in (repr(p), repr(p.options), repr(tr.TrustedCommand("new", 32, opts=p))):
        _clean(text, "an options repr")
        assert "ab" * 20 not in text and "\\xab" not in text
        assert "blobauth" in text and "keyauth" in text
    assert "source" in repr(p) and "rng" in repr(p)
    # Equality still sees the values: the repr is the only thing that hides them.
    assert p != parse_options(f"keyauth={'ab' * 20} blobauth=other source=host rng=kernel pcrlock=7 keyhandle=0x{HEX}")


def test_preparsed_repr_hides_the_payload() -> None:
    prep = Preparsed(data=f"load {HEX}".encode(), payload=TEXT.encode(), quotalen=3)
    _clean(repr(prep), "Preparsed's repr")
    assert "bytes" in repr(prep)


@pytest.mark.parametrize("bad", [5, None, 1.5, ["new 32"], "new 32 blobauth=\udcff"])
def test_wrong_payload_types_are_einval(bad: object) -> None:
    for fn in (tr.parse_payload, enc.parse_payload, parse_options, enc.EncryptedKeyType().preparse, tr.TrustedKeyType().preparse):
        with pytest.raises(OSError) as info:
            fn(bad)  # type: ignore[arg-type]
        assert info.value.errno == errno.EINVAL, fn


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("new", 10**5000), {}),
        (("new", 32), {"pcrlock": 10**5000}),
        (("new", 1.5), {}),
        ((b"new", 32), {}),
        (("new", 32), {"blobauth": 1.5}),
        (("new", 32), {"blobauth": "\ud800"}),
    ],
)
def test_trusted_payload_builder_refuses_wrong_types(args: tuple[object, ...], options: dict[str, object]) -> None:
    with pytest.raises(OSError) as info:
        tr.trusted_payload(*args, **options)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL
