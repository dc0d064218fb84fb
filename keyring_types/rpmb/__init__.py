"""RPMB (Replay Protected Memory Block) support.

:mod:`~keyring_types.rpmb.frames` builds, signs, parses and verifies the
512-byte eMMC/UFS/virtio RPMB data frames with the native HMAC-SHA256 hot
path; :mod:`~keyring_types.rpmb.codes` names the request, response and result
codes.  The MAC key comes from an :class:`~keyring_types.hmac.HmacSha256`, raw
key bytes, or a key handle's ``secret()`` — this package never imports the
key-type layers.  :class:`~keyring_types.rpmb.device.RpmbDevice` is the client
for devices and the emulator (:mod:`keyring_types.rpmb.emulator`).
"""

from typing import TYPE_CHECKING, Any

from keyring_types.rpmb import codes, frames
from keyring_types.rpmb.codes import RequestType, ResponseType, Result

if TYPE_CHECKING:
    from keyring_types.rpmb.device import RpmbDevice

__all__ = ["codes", "frames", "RequestType", "ResponseType", "Result", "RpmbDevice"]


def __getattr__(name: str) -> Any:
    # The client (and its transports) load on first use: frames alone stay light.
    if name == "RpmbDevice":
        from keyring_types.rpmb.device import RpmbDevice

        return RpmbDevice
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
