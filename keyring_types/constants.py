"""Constants mirroring ``<keyutils.h>`` / ``<linux/keyctl.h>``."""

from __future__ import annotations

from typing import Final

KEY_SPEC_THREAD_KEYRING: Final = -1
KEY_SPEC_PROCESS_KEYRING: Final = -2
KEY_SPEC_SESSION_KEYRING: Final = -3
KEY_SPEC_USER_KEYRING: Final = -4
KEY_SPEC_USER_SESSION_KEYRING: Final = -5
KEY_SPEC_GROUP_KEYRING: Final = -6
KEY_SPEC_REQKEY_AUTH_KEY: Final = -7
KEY_SPEC_REQUESTOR_KEYRING: Final = -8

#: keyctl's ``@x`` aliases for the special keyring IDs.
KEY_SPEC_ALIASES: Final[dict[str, int]] = {
    "@t": KEY_SPEC_THREAD_KEYRING,
    "@p": KEY_SPEC_PROCESS_KEYRING,
    "@s": KEY_SPEC_SESSION_KEYRING,
    "@u": KEY_SPEC_USER_KEYRING,
    "@us": KEY_SPEC_USER_SESSION_KEYRING,
    "@g": KEY_SPEC_GROUP_KEYRING,
    "@a": KEY_SPEC_REQKEY_AUTH_KEY,
}

KEY_POS_VIEW: Final = 0x01000000
KEY_POS_READ: Final = 0x02000000
KEY_POS_WRITE: Final = 0x04000000
KEY_POS_SEARCH: Final = 0x08000000
KEY_POS_LINK: Final = 0x10000000
KEY_POS_SETATTR: Final = 0x20000000
KEY_POS_ALL: Final = 0x3F000000

KEY_USR_VIEW: Final = 0x00010000
KEY_USR_READ: Final = 0x00020000
KEY_USR_WRITE: Final = 0x00040000
KEY_USR_SEARCH: Final = 0x00080000
KEY_USR_LINK: Final = 0x00100000
KEY_USR_SETATTR: Final = 0x00200000
KEY_USR_ALL: Final = 0x003F0000

KEY_GRP_VIEW: Final = 0x00000100
KEY_GRP_READ: Final = 0x00000200
KEY_GRP_WRITE: Final = 0x00000400
KEY_GRP_SEARCH: Final = 0x00000800
KEY_GRP_LINK: Final = 0x00001000
KEY_GRP_SETATTR: Final = 0x00002000
KEY_GRP_ALL: Final = 0x00003F00

KEY_OTH_VIEW: Final = 0x00000001
KEY_OTH_READ: Final = 0x00000002
KEY_OTH_WRITE: Final = 0x00000004
KEY_OTH_SEARCH: Final = 0x00000008
KEY_OTH_LINK: Final = 0x00000010
KEY_OTH_SETATTR: Final = 0x00000020
KEY_OTH_ALL: Final = 0x0000003F

#: Every settable permission bit; anything else makes setperm fail with EINVAL.
KEY_PERM_MASK: Final = KEY_POS_ALL | KEY_USR_ALL | KEY_GRP_ALL | KEY_OTH_ALL

# Kernel limits (include/linux/key.h, security/keys/keyctl.c).
KEY_TYPE_NAME_MAX: Final = 32  # including the NUL
KEY_MAX_DESC_SIZE: Final = 4096  # including the NUL
KEY_ADD_PAYLOAD_MAX: Final = 1024 * 1024 - 1
KEY_UPDATE_PAYLOAD_MAX: Final = 4096  # PAGE_SIZE on x86-64
KEYQUOTA_LINK_BYTES: Final = 4
KEYRING_SEARCH_MAX_DEPTH: Final = 6

# Quota defaults (/proc/sys/kernel/keys/).
KEY_QUOTA_MAXKEYS: Final = 200
KEY_QUOTA_MAXBYTES: Final = 20000
KEY_QUOTA_ROOT_MAXKEYS: Final = 1000000
KEY_QUOTA_ROOT_MAXBYTES: Final = 25000000
KEY_GC_DELAY: Final = 300
#: Seconds a persistent keyring lives after its last KEYCTL_GET_PERSISTENT (three days).
PERSISTENT_KEYRING_EXPIRY: Final = 3 * 24 * 3600

#: The kernel shows an invalid gid through from_kgid_munged() as the overflow gid.
OVERFLOW_GID: Final = 65534
