"""The contract of a derived-key root (what :mod:`keyring_types.derive.registry` loads)."""

from __future__ import annotations

import abc
import errno
from typing import TYPE_CHECKING, ClassVar

from keyring_types.derive.kdf import PRF_SIZE, kdf108_ctr_into
from keyring_types.errors import error

if TYPE_CHECKING:
    from keyring_types.derive.pcr_policy import PcrSelection

__all__ = ["DeriveRoot"]


class DeriveRoot(abc.ABC):
    """A PRF keyed with a secret that stays inside the root.

    Subclasses set :attr:`name` and implement :meth:`prf_into`; a root whose
    blocks must be computed under one lock or retried as a whole (the TPM's)
    overrides :meth:`derive_into` too.  Instances are shared between threads.
    """

    name: ClassVar[str]

    @classmethod
    def available(cls) -> bool:
        """Whether the root can be used on this machine now (a cheap probe, no key made)."""
        return True

    @abc.abstractmethod
    def prf_into(self, message: bytes, out: memoryview) -> None:
        """Write PRF(``message``), 32 bytes, into ``out[:32]``."""

    def derive_into(self, info: bytes, out: memoryview, *, pcrs: PcrSelection | None = None) -> None:
        """Fill ``out`` with the SP 800-108 counter-mode output over ``info`` (see :mod:`~keyring_types.derive.kdf`).

        ``pcrs`` (the ``pcrs=`` option) asks for a root gated by PCRs:
        ``EOPNOTSUPP`` from a root that has none.
        """
        if pcrs is not None:
            raise error(errno.EOPNOTSUPP, f"pcrs= needs a TPM; the derived-key root '{self.name}' has no PCRs")
        kdf108_ctr_into(self.prf_into, info, out)

    def close(self) -> None:  # noqa: B027  (a root that holds nothing has nothing to release)
        """Release what the root holds (a TPM object, a cached seed); a later use opens it again."""


assert PRF_SIZE == 32  # every root's PRF is HMAC-SHA256-sized, as the RFC's TPM2_Sign output
