"""The view a request-key handler acts through (the helper process's credentials).

While it holds a valid authority, the kernel lets the helper's searches and
possession checks go on into the requester's keyrings, with the requester's
credentials (``search_process_keyrings_rcu``): so a handler can reach, and
instantiate into, the keyrings of whoever asked.  Only handler views pay for
that second search; every other view keeps the plain one.
"""

from __future__ import annotations

import errno

from keyring_types.core.keyspace import Keyspace
from keyring_types.core.process_keys import ProcessKeys
from keyring_types.core.record import UNDER_CONSTRUCTION, KeyRecord
from keyring_types.core.request_key_auth import AUTH_KEY_PERM, AUTH_TYPE, RequestKeyAuth
from keyring_types.core.search import SearchContext, search_cred_keyrings
from keyring_types.errors import error

__all__ = ["HandlerKeyspace"]


class HandlerKeyspace(Keyspace):
    """A Keyspace view that also searches its requester's keyrings while it holds authority."""

    def _requester(self) -> ProcessKeys | None:
        auth = self._reqkey_auth
        if auth is None or auth.payload is None or auth.revoked or auth.invalidated:
            return None
        if auth.expiry and auth.expired_at(self._world.now()):
            return None
        requester: ProcessKeys = auth.payload.requester
        return requester

    def _search_process(self, index: tuple[str, str]) -> tuple[KeyRecord | None, int]:
        found, err = super()._search_process(index)
        if found is not None:
            return found, err
        requester = self._requester()
        # Authorisation keys are never found through the requester's keyrings.
        if requester is None or index[0] == AUTH_TYPE.name:
            return None, err
        found, ret = ProcessKeys._search_process(requester, index)
        if found is not None:
            return found, 0
        if errno.ENOKEY in (err, ret):
            return None, errno.ENOKEY
        return None, ret if err == errno.EACCES else err

    def inherit_authority(self, keyid: int) -> int:
        """Hold the authority over key ``keyid`` that this view's keyrings hold; its serial.

        For a handler program started in another process (a store's): it holds
        the authority as a program started by /sbin/request-key inherits the one
        request-key assumed before exec.  Unlike ``assume_authority`` a spent
        (revoked) authority is held too, so the handler-side calls then answer
        ``EKEYREVOKED`` as the kernel's do, and so is one spent by building the key
        (``EBUSY`` then).  ``ENOKEY`` if no authorisation key for ``keyid`` is
        reachable and ``keyid`` is not a key whose construction has ended.
        """
        with self._scope:
            # Revoked or expired, it is still the one the program was given.
            ctx = SearchContext((AUTH_TYPE.name, f"{keyid:x}"), self.cred, self._world.now(), state_check=False)
            found, _err = search_cred_keyrings(self._cred_rings(), ctx)
            if found is None:
                found = self._spent_authority(keyid)
            self._take_authority(found)
            return found.serial

    def _spent_authority(self, keyid: int) -> KeyRecord:
        """The authority over ``keyid`` after the key was built: invalidated, and so linked nowhere.

        The kernel's credentials still point at such an authorisation key, and the
        handler-side calls then reach the built key and answer ``EBUSY``.  Where
        the invalidated key no longer exists (a store deletes its row), this
        stands for it; it is no key of the keyspace (serial 0, in no keyring).
        ``ENOKEY`` if ``keyid`` is not a key whose construction has ended.
        """
        w = self._world
        target = w.keys.get(keyid)
        if target is None or target.dead or target.upcall == UNDER_CONSTRUCTION:
            raise error(errno.ENOKEY, f"no request-key authority over key {keyid} is reachable from here")
        cred = self.cred
        spent = KeyRecord(0, AUTH_TYPE, f"{keyid:x}", cred.uid, cred.gid, AUTH_KEY_PERM, w.key_user(cred.uid),
                          RequestKeyAuth(target, None, b"", self, 0), in_quota=False, instantiated=True,
                          invalidated=True)  # fmt: skip
        spent.index_key = (AUTH_TYPE.name, spent.description)
        return spent

    def _possessed(self, rec: KeyRecord) -> bool:
        if super()._possessed(rec):
            return True
        requester = self._requester()
        return requester is not None and rec.ktype is not AUTH_TYPE and ProcessKeys._possessed(requester, rec)
