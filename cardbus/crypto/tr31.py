"""Provider -> platform key provisioning with TR-31 key blocks (version D: AES KBPK).

psec checks a block's format and MAC but not what its header permits. This module does: the
platform accepts a block only if its version, key usage, algorithm, mode of use and
exportability are exactly what it is provisioned to receive for that purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from psec import tr31 as _tr31

from cardbus.crypto.keys import KeyUsage
from cardbus.errors import KeyBlockError, KeyBlockHeaderMismatch, KeyUsageError


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """The TR-31 header fields a provisioned key must carry."""

    key_usage: str  # e.g. "P0" PIN encryption, "D0" data encryption
    algorithm: str  # "A" AES, "T" TDES
    mode_of_use: str  # "E" encrypt only, "B" both, ...
    exportability: str  # "N" non-exportable, "E" exportable under a trusted key

    def header(self, version_num: str = "00") -> str:
        """A version D header with no optional blocks."""
        return f"D0000{self.key_usage}{self.algorithm}{self.mode_of_use}{version_num}" \
               f"{self.exportability}0000"


# What a provider sends the platform, and what the platform accepts for each purpose.
# The platform only ever encrypts under these keys (PIN translation into the provider's PIN
# key, PAN re-encryption to the provider), so the mode of use is "E" and they go no further.
# An issuer's security-domain master is an "EMV/chip issuer master key: card personalization"
# (E5) that only derives (mode X) the card keys the platform's card manager uses. A card's
# own key on its way to the card (an e-purse's load or TAC key, TDES) is "EMV/chip: other" (E6)
# with no use at the platform (mode N) but export (E) under the card's Key-DEK in STORE DATA.
PROVISIONED: dict[KeyUsage, HeaderSpec] = {
    KeyUsage.PIN_ENC: HeaderSpec("P0", "A", "E", "N"),
    KeyUsage.PAN_ENC: HeaderSpec("D0", "A", "E", "N"),
    KeyUsage.GP_ISD_MASTER: HeaderSpec("E5", "A", "X", "N"),
    KeyUsage.CARD_PERSO: HeaderSpec("E6", "T", "N", "E"),
}


def _spec(usage: KeyUsage) -> HeaderSpec:
    spec = PROVISIONED.get(usage)
    if spec is None:
        raise KeyUsageError(f"keys of usage {usage.value} are not provisioned by key block")
    return spec


def _check_kbpk(kbpk: bytes) -> None:
    if len(kbpk) not in (16, 24, 32):
        raise KeyUsageError("a version D KBPK must be an AES key")


def wrap_key_block(kbpk: bytes, usage: KeyUsage, key: bytes, *, version_num: str = "00") -> str:
    """Provider side: put ``key`` into a TR-31 version D block for ``usage``."""
    _check_kbpk(kbpk)
    try:
        return _tr31.wrap(kbpk, _spec(usage).header(version_num), key)
    except ValueError as exc:
        raise KeyBlockError(f"cannot wrap key block: {exc}") from None


def unwrap_key_block(kbpk: bytes, key_block: str, usage: KeyUsage) -> tuple[bytes, str]:
    """Platform side: open a block and check its header against ``usage``'s spec.

    Returns ``(key, version_num)``. ``KeyBlockError`` if malformed, truncated or its MAC does
    not verify (wrong KBPK, tampering); ``KeyBlockHeaderMismatch`` if it opens but its header
    is not what the platform is provisioned to receive.
    """
    _check_kbpk(kbpk)
    spec = _spec(usage)
    if not key_block.startswith("D"):
        raise KeyBlockError("only TR-31 version D (AES key derivation) blocks are accepted")
    try:
        header, key = _tr31.unwrap(kbpk, key_block)
    except ValueError as exc:
        raise KeyBlockError(f"key block does not open: {exc}") from None
    got = HeaderSpec(header.key_usage, header.algorithm, header.mode_of_use,
                     header.exportability)
    if got != spec:
        raise KeyBlockHeaderMismatch(
            f"key block header {got.key_usage}/{got.algorithm}/{got.mode_of_use}/"
            f"{got.exportability} does not match {usage.value} "
            f"({spec.key_usage}/{spec.algorithm}/{spec.mode_of_use}/{spec.exportability})"
        )
    return key, header.version_num
