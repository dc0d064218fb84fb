"""RPMB (Replay Protected Memory Block) support.

:mod:`~keyring_types.rpmb.frames` builds, signs, parses and verifies the
512-byte eMMC/UFS/virtio RPMB data frames with the native HMAC-SHA256 hot
path; :mod:`~keyring_types.rpmb.codes` names the request, response and result
codes.  The MAC key comes from an :class:`~keyring_types.hmac.HmacSha256`, raw
key bytes, or a key handle's ``secret()`` — this package never imports the
key-type layers.
"""

from keyring_types.rpmb import codes, frames
from keyring_types.rpmb.codes import RequestType, ResponseType, Result

__all__ = ["codes", "frames", "RequestType", "ResponseType", "Result"]
