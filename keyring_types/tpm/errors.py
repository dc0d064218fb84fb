"""TPM 2.0 and TSS return codes turned into errno values and messages that name the fix.

The kernel's trusted keys answer every TPM refusal with ``EPERM`` (and
TPM_RC_HASH on seal with ``EINVAL``).  Most refusals here keep that errno, but
the message decodes the code (name, what the TPM meant, which handle/session/
parameter) and says what to do.  Where ``EPERM`` would point the wrong way
the errno changes: a TPM out of object or session memory is ``ENOMEM``, a busy
TPM is ``EAGAIN``, a TPM in failure mode or never started is ``EIO``, and a
broken transport is ``EIO``.

Messages never contain a password, key or payload byte: only the code, its
decoding and the caller's description of the operation.
"""

from __future__ import annotations

import errno

import attrs

from keyring_types.errors import KeyringError, error

__all__ = ["TPM_RC_HASH", "TSS2_RC_LAYER_SHIFT", "TpmRc", "decode_rc", "tpm_error"]

TSS2_RC_LAYER_SHIFT = 16
#: TSS2 layers whose codes are TPM response codes: the TPM itself, or a resource manager relaying one.
_TPM_LAYERS = frozenset({0, 11})
_LAYER_ESYS = 7
_LAYER_SYS = 8
_LAYER_MU = 9
_LAYER_TCTI = 10
_LAYER_RESMGR = 12
_LAYER_NAMES = {
    1: "tpm2-tools",
    5: "fapi",
    6: "fapi",
    _LAYER_ESYS: "esapi",
    _LAYER_SYS: "sapi",
    _LAYER_MU: "marshalling",
    _LAYER_TCTI: "tcti",
    _LAYER_RESMGR: "resource manager",
}

_RC_FMT1 = 0x080
_RC_VER1 = 0x100
_RC_WARN = 0x900

TPM_RC_HASH = 0x083

# Hints, shared by several codes.
_HINT_MEMORY = (
    "the TPM has no free slot: flush transient objects and sessions (tpm2_flushcontext -t -s), "
    "or reach the TPM through a resource manager (device:/dev/tpmrm0 or tabrmd:)"
)
_HINT_LOCKOUT = (
    "the TPM is in dictionary-attack lockout after too many wrong passwords: wait for the lockout "
    "to expire, or clear it with the lockout authorisation (tpm2_dictionarylockout --clear-lockout)"
)
_HINT_RETRY = "the TPM is busy: try again"
_HINT_POLICY = "the policy session does not satisfy the object's authPolicy (check the PCRs and the policy digest)"
_HINT_BLOB = "the sealed object was made by another TPM or under another parent, or is damaged"

#: (name, errno, hint) for the codes that get something better than the default.  Keys are
#: tpm2_rc_value()s: format-1 codes with the handle/session/parameter number masked off.
_KNOWN: dict[int, tuple[str, int, str]] = {
    # Out of TPM memory: not a permission problem.
    0x902: ("TPM_RC_OBJECT_MEMORY", errno.ENOMEM, _HINT_MEMORY),
    0x903: ("TPM_RC_SESSION_MEMORY", errno.ENOMEM, _HINT_MEMORY),
    0x904: ("TPM_RC_MEMORY", errno.ENOMEM, _HINT_MEMORY),
    0x905: ("TPM_RC_SESSION_HANDLES", errno.ENOMEM, _HINT_MEMORY),
    0x906: ("TPM_RC_OBJECT_HANDLES", errno.ENOMEM, _HINT_MEMORY),
    0x12E: ("TPM_RC_TOO_MANY_CONTEXTS", errno.ENOMEM, _HINT_MEMORY),
    # Transient: the same command can succeed a moment later.
    0x908: ("TPM_RC_YIELDED", errno.EAGAIN, _HINT_RETRY),
    0x909: ("TPM_RC_CANCELED", errno.EAGAIN, _HINT_RETRY),
    0x90A: ("TPM_RC_TESTING", errno.EAGAIN, _HINT_RETRY),
    0x920: ("TPM_RC_NV_RATE", errno.EAGAIN, _HINT_RETRY),
    0x922: ("TPM_RC_RETRY", errno.EAGAIN, _HINT_RETRY),
    0x923: ("TPM_RC_NV_UNAVAILABLE", errno.EAGAIN, _HINT_RETRY),
    # The TPM itself is not usable.
    0x100: ("TPM_RC_INITIALIZE", errno.EIO, "the TPM was not started: send TPM2_Startup (tpm2_startup -c)"),
    0x101: ("TPM_RC_FAILURE", errno.EIO, "the TPM is in failure mode: it needs a reset"),
    0x130: ("TPM_RC_REBOOT", errno.EIO, "the TPM needs a reboot (TPM2_Shutdown + TPM2_Startup)"),
    # Refusals: EPERM, as the kernel answers them.
    0x921: ("TPM_RC_LOCKOUT", errno.EPERM, _HINT_LOCKOUT),
    0x08E: ("TPM_RC_AUTH_FAIL", errno.EPERM, "wrong password (the TPM counted a dictionary-attack failure)"),
    0x0A2: ("TPM_RC_BAD_AUTH", errno.EPERM, "wrong password"),
    0x125: ("TPM_RC_AUTH_MISSING", errno.EPERM, "the command needs an authorisation session"),
    0x124: ("TPM_RC_AUTH_TYPE", errno.EPERM, "this object cannot be authorised this way (password vs policy)"),
    0x12F: (
        "TPM_RC_AUTH_UNAVAILABLE",
        errno.EPERM,
        "the object has no userWithAuth (it was sealed with policydigest=): unseal with policyhandle=",
    ),
    0x09D: ("TPM_RC_POLICY_FAIL", errno.EPERM, _HINT_POLICY),
    0x126: ("TPM_RC_POLICY", errno.EPERM, _HINT_POLICY),
    0x0A4: ("TPM_RC_POLICY_CC", errno.EPERM, _HINT_POLICY),
    0x128: ("TPM_RC_PCR_CHANGED", errno.EPERM, "a PCR changed after the policy session was satisfied: start it again"),
    0x0A3: ("TPM_RC_EXPIRED", errno.EPERM, "the policy session has expired: start a new one"),
    0x08B: (
        "TPM_RC_HANDLE",
        errno.EPERM,
        "no usable object at that handle: create the parent and persist it (tpm2_evictcontrol), or check keyhandle=",
    ),
    0x910: ("TPM_RC_REFERENCE_H0", errno.EPERM, "no object at that handle: check keyhandle="),
    0x918: ("TPM_RC_REFERENCE_S0", errno.EPERM, "no session at that handle: check policyhandle="),
    0x09F: ("TPM_RC_INTEGRITY", errno.EPERM, _HINT_BLOB),
    0x0A5: ("TPM_RC_BINDING", errno.EPERM, _HINT_BLOB),
    0x10B: ("TPM_RC_PRIVATE", errno.EPERM, _HINT_BLOB),
    0x155: ("TPM_RC_SENSITIVE", errno.EPERM, _HINT_BLOB),
    0x09C: ("TPM_RC_KEY", errno.EPERM, "the parent is not a storage key that can hold this object"),
    0x082: ("TPM_RC_ATTRIBUTES", errno.EPERM, "the object's attributes do not allow this"),
    0x120: ("TPM_RC_DISABLED", errno.EPERM, "the hierarchy or command is disabled on this TPM"),
    0x085: ("TPM_RC_HIERARCHY", errno.EPERM, "the hierarchy is disabled or the object belongs to another one"),
    TPM_RC_HASH: ("TPM_RC_HASH", errno.EPERM, "this TPM does not implement that hash algorithm (hash=)"),
}

#: Names of the other TPM 2.0 codes (Part 2, 6.6.3), for messages.
_NAMES: dict[int, str] = {
    0x081: "TPM_RC_ASYMMETRIC", 0x084: "TPM_RC_VALUE", 0x087: "TPM_RC_KEY_SIZE", 0x088: "TPM_RC_MGF",
    0x089: "TPM_RC_MODE", 0x08A: "TPM_RC_TYPE", 0x08C: "TPM_RC_KDF", 0x08D: "TPM_RC_RANGE",
    0x08F: "TPM_RC_NONCE", 0x090: "TPM_RC_PP", 0x092: "TPM_RC_SCHEME", 0x095: "TPM_RC_SIZE",
    0x096: "TPM_RC_SYMMETRIC", 0x097: "TPM_RC_TAG", 0x098: "TPM_RC_SELECTOR", 0x09A: "TPM_RC_INSUFFICIENT",
    0x09B: "TPM_RC_SIGNATURE", 0x0A0: "TPM_RC_TICKET", 0x0A1: "TPM_RC_RESERVED_BITS", 0x0A6: "TPM_RC_CURVE",
    0x0A7: "TPM_RC_ECC_POINT", 0x103: "TPM_RC_SEQUENCE", 0x119: "TPM_RC_HMAC", 0x121: "TPM_RC_EXCLUSIVE",
    0x127: "TPM_RC_PCR", 0x12D: "TPM_RC_UPGRADE", 0x131: "TPM_RC_UNBALANCED", 0x142: "TPM_RC_COMMAND_SIZE",
    0x143: "TPM_RC_COMMAND_CODE", 0x144: "TPM_RC_AUTHSIZE", 0x145: "TPM_RC_AUTH_CONTEXT",
    0x146: "TPM_RC_NV_RANGE", 0x147: "TPM_RC_NV_SIZE", 0x148: "TPM_RC_NV_LOCKED",
    0x149: "TPM_RC_NV_AUTHORIZATION", 0x14A: "TPM_RC_NV_UNINITIALIZED", 0x14B: "TPM_RC_NV_SPACE",
    0x14C: "TPM_RC_NV_DEFINED", 0x150: "TPM_RC_BAD_CONTEXT", 0x151: "TPM_RC_CPHASH", 0x152: "TPM_RC_PARENT",
    0x153: "TPM_RC_NEEDS_TEST", 0x154: "TPM_RC_NO_RESULT", 0x901: "TPM_RC_CONTEXT_GAP", 0x907: "TPM_RC_LOCALITY",
}  # fmt: skip


@attrs.frozen
class TpmRc:
    """A decoded TSS2 return code.

    ``layer`` is the TSS2 layer (0: the TPM), ``value`` the TPM code with the
    handle/session/parameter number masked off (``tpm2_rc_value()``), ``name``
    the TPM_RC_* name when known, ``where`` e.g. ``"session 1"``, ``text`` the
    TSS's own description (``Tss2_RC_Decode``) when tpm2-tss is loaded.
    """

    rc: int
    layer: int
    value: int
    name: str
    where: str
    text: str

    @property
    def is_tpm(self) -> bool:
        """Whether the code came from the TPM (directly or relayed by a resource manager)."""
        return self.layer in _TPM_LAYERS


def _tss_text(rc: int) -> str:
    """tpm2-tss' own description of ``rc`` ("" when tpm2-pytss is not importable)."""
    try:
        from tpm2_pytss._libtpm2_pytss import ffi, lib
    except ImportError:
        return ""
    text = str(ffi.string(lib.Tss2_RC_Decode(rc)).decode("ascii", "replace"))
    # "tpm:session(1):the authorization ..." -> the description after the last prefix.
    return text.rsplit(":", 1)[-1].strip()


def decode_rc(rc: int) -> TpmRc:
    """Decode a TSS2_RC (layer, tpm2_rc_value, name, handle/session/parameter, text)."""
    rc = int(rc) & 0xFFFFFFFF
    layer = rc >> TSS2_RC_LAYER_SHIFT
    code = rc & 0xFFFF
    where = ""
    if layer in _TPM_LAYERS and code & _RC_FMT1:
        value = code & 0xBF
        number = (code >> 8) & 0xF
        if code & 0x40:
            where = f"parameter {number}"
        elif code & 0x800:
            where = f"session {number & 0x7}"
        elif number:
            where = f"handle {number}"
    elif layer in _TPM_LAYERS and _RC_WARN <= code < _RC_WARN + 0x100 and code & _RC_VER1:
        value = code
        # TPM_RC_REFERENCE_H0..H6 and _S0..S6 name the handle/session in their low bits.
        if 0x910 <= code <= 0x916:
            value, where = 0x910, f"handle {code - 0x910 + 1}"
        elif 0x918 <= code <= 0x91E:
            value, where = 0x918, f"session {code - 0x918 + 1}"
    else:
        value = code
    known = _KNOWN.get(value) if layer in _TPM_LAYERS else None
    if known is not None:
        name = known[0]
    elif layer in _TPM_LAYERS:
        name = _NAMES.get(value, f"TPM_RC {value:#x}")
    else:
        name = f"{_LAYER_NAMES.get(layer, f'TSS layer {layer}')} error {code:#x}"
    return TpmRc(rc=rc, layer=layer, value=value, name=name, where=where, text=_tss_text(rc))


def tpm_error(rc: int, what: str, *, seal: bool = False) -> KeyringError:
    """The ``OSError`` for TSS2 return code ``rc`` raised while trying to ``what``.

    errno: ``EINVAL`` for TPM_RC_HASH on seal (the kernel's rule); ``ENOMEM`` when the
    TPM is out of object/session memory; ``EAGAIN`` when it is busy; ``EIO`` when it
    is not started or in failure mode, or the transport (TCTI) failed; ``EPERM`` for
    every other refusal (wrong password, lockout, policy, missing handle, a blob from
    another TPM), as the kernel's trusted keys answer them.
    """
    d = decode_rc(rc)
    detail = f"{d.name} ({d.rc:#x}"
    if d.where:
        detail += f", {d.where}"
    if d.text:
        detail += f": {d.text}"
    detail += ")"
    if d.is_tpm:
        if seal and d.value == TPM_RC_HASH:
            return error(errno.EINVAL, f"TPM cannot {what}: {detail}; this TPM does not implement that hash= algorithm")
        known = _KNOWN.get(d.value)
        if known is not None:
            _, err, hint = known
            return error(err, f"TPM refused to {what}: {detail}; {hint}")
        return error(errno.EPERM, f"TPM refused to {what}: {detail}")
    if d.layer == _LAYER_TCTI:
        return error(errno.EIO, f"TPM transport failed during '{what}': {detail}")
    return error(errno.EPERM, f"cannot {what}: {detail}")
