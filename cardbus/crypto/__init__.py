"""CardBus payment cryptography: the one place that holds and uses keys (the "HSM").

Modules:

- ``keys``: key usages, key check values, fresh key generation;
- ``keystore``: the platform storage key (versioned) and the AEAD key store;
- ``tr31``: provider -> platform key blocks (TR-31 version D, AES KBPK) with header checks;
- ``wrap``: platform -> terminal key delivery (X25519 + HKDF-SHA256 + AES-256-GCM);
- ``signing``: Ed25519 identities and HMAC seals over events' canonical bytes;
- ``emv``: ICC master key (option A), session keys, ARQC, ARPC (methods 1 and 2);
- ``card_auth``: card certificates and the card's signature over the terminal's number;
- ``pin``: ISO 9564 format 4 PIN blocks, translation, PVV / IBM 3624 verification;
- ``pan``: PAN tokens (HMAC) and PAN encryption;
- ``transit``: PBOC-style e-purse load MACs (MAC1, MAC2, TAC);
- ``hsm``: role facades (platform, provider, terminal) that expose operations, not keys;
- ``bench``: ``cardbus bench crypto``.
"""

from __future__ import annotations

import warnings


def quiet_tdes_warnings() -> None:
    """Silence the one warning pyemv/psec raise for TripleDES under cryptography >= 48, by
    its category: EMV card cryptograms have no AES profile in these libraries."""
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
