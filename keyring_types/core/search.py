"""Searching keyring trees (``search_nested_keyrings`` and ``search_cred_keyrings``).

Search visits the keys of a keyring before its nested keyrings, descends
depth-first into nested keyrings the caller may SEARCH, skips revoked and
invalidated keyrings, and stops descending below KEYRING_SEARCH_MAX_DEPTH.
Unusable matches (revoked, expired, not searchable) are remembered as the
error to report if nothing usable turns up, the last one seen winning.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from keyring_types.constants import KEY_POS_SEARCH, KEYRING_SEARCH_MAX_DEPTH
from keyring_types.core.perm import NEED_SEARCH, permitted

if TYPE_CHECKING:
    from keyring_types.core.cred import Cred
    from keyring_types.core.record import IndexKey, KeyRecord

__all__ = ["EAGAIN", "SearchContext", "direct_hit", "search_cred_keyrings", "search_keyring_tree", "type_match"]

#: "Nothing found" inside a search, before it is reported as ENOKEY.
EAGAIN = errno.EAGAIN


class SearchContext:
    """One search: what to match and which checks apply.

    A plain slotted class rather than attrs: searches run in every command, and
    importing attrs is about a fifth of a one-shot ``ktctl`` command's start-up (docs/performance.md, "ktctl start-up").
    """

    __slots__ = (
        "check_perm",
        "cred",
        "detect_too_deep",
        "err",
        "index",
        "iterate",
        "match",
        "now",
        "possessed",
        "skip_expired",
        "state_check",
    )

    def __init__(
        self,
        index: IndexKey,
        cred: Cred,
        now: int,
        match: Callable[[KeyRecord], bool] | None = None,
        state_check: bool = True,
        skip_expired: bool = False,
        check_perm: bool = True,
        detect_too_deep: bool = False,
        possessed: bool = False,
        err: int = EAGAIN,
        iterate: bool = False,
    ) -> None:
        self.index = index
        self.cred = cred
        self.now = now
        #: Extra match on the candidate (identity match for possession checks).
        self.match = match
        self.state_check = state_check
        self.skip_expired = skip_expired
        self.check_perm = check_perm
        self.detect_too_deep = detect_too_deep
        self.possessed = possessed
        #: errno of the last unusable match (EAGAIN: none yet).
        self.err = err
        #: Consider every key of the index's type through ``match`` instead of looking the
        #: description up (KEYRING_SEARCH_LOOKUP_ITERATE: a type's ``match_preparse`` chose it).
        self.iterate = iterate

    def __repr__(self) -> str:
        return f"SearchContext(index={self.index!r}, cred={self.cred!r}, now={self.now}, err={self.err})"

    def _consider(self, key: KeyRecord) -> bool:
        """``keyring_search_iterator``: True if ``key`` is the answer."""
        if key.dead:
            return False
        if self.state_check:
            if key.invalidated or key.revoked:
                self.err = errno.EKEYREVOKED
                return False
            if key.expired_at(self.now):
                if not self.skip_expired:
                    self.err = errno.EKEYEXPIRED
                return False
        if self.match is not None and not self.match(key):
            return False
        if self.check_perm and not permitted(key, self.cred, self.possessed, NEED_SEARCH):
            self.err = errno.EACCES
            return False
        if self.state_check and key.upcall > 0:
            # A negative key: skipped, its error reported if nothing better turns up.
            self.err = key.upcall
            return False
        return True


def search_keyring_tree(top: KeyRecord, ctx: SearchContext) -> KeyRecord | None:
    """Search from ``top`` (itself a candidate) through the keyrings below it.

    Returns the key found, or None with ``ctx.err`` saying why (EAGAIN: no match,
    ELOOP: too deep with ``detect_too_deep``).
    """
    if (top.index_key == ctx.index or (ctx.iterate and top.index_key[0] == ctx.index[0])) and ctx._consider(top):
        return top
    if top.invalidated or top.revoked:
        return None
    if ctx.iterate:
        found = _candidate(top, ctx) if top.links is not None else None
        if found is not None:
            return found
    else:
        found = top.links.get(ctx.index) if top.links is not None else None
        if found is not None and ctx._consider(found):
            return found
    if top.links is None:
        return None
    stack: list[Iterator[KeyRecord]] = [iter(list(_sub_keyrings(top)))]
    while stack:
        nxt = next(stack[-1], None)
        if nxt is None:
            stack.pop()
            continue
        if len(stack) > KEYRING_SEARCH_MAX_DEPTH:  # len-1 ancestors are stacked
            if ctx.detect_too_deep:
                ctx.err = errno.ELOOP
                return None
            stack.pop()
            continue
        if ctx.check_perm and not permitted(nxt, ctx.cred, ctx.possessed, NEED_SEARCH):
            continue
        if nxt.invalidated or nxt.revoked:
            continue
        assert nxt.links is not None
        cand = _candidate(nxt, ctx) if ctx.iterate else nxt.links.get(ctx.index)
        if cand is not None and (ctx.iterate or ctx._consider(cand)):
            return cand
        stack.append(iter(list(_sub_keyrings(nxt))))
    return None


def _candidate(ring: KeyRecord, ctx: SearchContext) -> KeyRecord | None:
    """The key of the index's type in ``ring`` (not below) that ``ctx`` accepts, if any (iterate mode)."""
    assert ring.links is not None
    type_name = ctx.index[0]
    for each in list(ring.links.values()):
        if each.index_key[0] == type_name and ctx._consider(each):
            return each
    return None


def type_match(type_name: str, description: str) -> Callable[[KeyRecord], bool] | None:
    """``match_preparse``: the type's own match for a search description, or None (exact description).

    A type offers one by a ``match_preparse(description)`` method (``asymmetric``:
    ``id:``/``ex:``/``dn:`` key-id searches); its errors (``EINVAL``) come before the search.
    """
    from keyring_types.core.keytype import lookup_key_type

    try:
        ktype = lookup_key_type(type_name)
    except OSError:
        return None
    preparse = getattr(ktype, "match_preparse", None)
    if preparse is None:
        return None
    match: Callable[[KeyRecord], bool] | None = preparse(description)
    return match


def _sub_keyrings(ring: KeyRecord) -> Iterable[KeyRecord]:
    assert ring.rings is not None
    return ring.rings.values()


def direct_hit(ring: KeyRecord, index: IndexKey, cred: Cred, now: Callable[[], int]) -> KeyRecord | None:
    """The key a ``skip_expired`` search from ``ring`` returns at once, if it is linked in ``ring``.

    A shortcut for the commonest request: a usable key linked directly in the
    keyring, which the search considers before any nested keyring.  None means
    "not settled here" (absent, or unusable so that the full search must report
    why); ``ring`` must not itself be a candidate (``index`` is not a keyring's).
    """
    if ring.revoked or ring.invalidated or ring.links is None:
        return None
    cand = ring.links.get(index)
    if cand is None or cand.dead or cand.revoked or cand.invalidated or cand.upcall > 0:
        return None
    # The clock is read only for a key that can expire.
    if cand.expiry and cand.expired_at(now()):
        return None
    # Searched as possessed: a possessor SEARCH bit settles it without permitted().
    if not (ring.perm & KEY_POS_SEARCH or permitted(ring, cred, True, NEED_SEARCH)):
        return None
    if not (cand.perm & KEY_POS_SEARCH or permitted(cand, cred, True, NEED_SEARCH)):
        return None
    return cand


def search_cred_keyrings(rings: Iterable[KeyRecord | None], ctx: SearchContext) -> tuple[KeyRecord | None, int]:
    """``search_cred_keyrings_rcu`` over the caller's thread, process and session keyrings.

    ``ctx`` is reused for each keyring, searched as possessed.  Returns (key, 0) or
    (None, errno) with the kernel's priority: success > ENOKEY > EAGAIN > any other error.
    """
    ret: int | None = None
    err = EAGAIN
    first = True
    ctx.possessed = True
    for ring in rings:
        if ring is None:
            continue
        ctx.err = EAGAIN
        if ring.links is None:
            res, code = None, errno.ENOTDIR
        elif ctx.check_perm and not permitted(ring, ctx.cred, True, NEED_SEARCH):
            res, code = None, errno.EACCES
        else:
            res = search_keyring_tree(ring, ctx)
            code = 0 if res is not None else ctx.err
        if res is not None:
            return res, 0
        if code in (EAGAIN, errno.ENOKEY):
            # The thread keyring's "nothing" is kept; later ones only fill an empty slot.
            if first or ret is None or code == errno.ENOKEY:
                ret = code
        else:
            err = code
        first = False
    return None, ret if ret is not None else err
