"""Card profiles: what a provider puts on a card when it issues one, and the card's own state.

A profile holds the card's secrets (its ICC master key, its private key, a transit load key):
they exist only in the profile file, under the state folder, never on the bus. The card's
changing state (ATC, transit balance, load sequence) is kept in a separate state file that the
applet rewrites atomically, so it persists across insertions.

The providers a card can be issued by are in ``PROVIDERS`` (a UnionPay-style debit AID, a
Visa-style AID, a transit e-purse); their issuing keys (IMK, card-authentication key, load key)
are generated once per state folder by ``IssuerKeys.load_or_create``.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict

from cardbus.crypto.keystore import b64d
from cardbus.crypto.pan import PanTokenizer
from cardbus.crypto.signing import Signer
from cardbus.crypto.transit import derive_card_key
from cardbus.errors import ConfigError
from cardbus.paths import sub_dir
from reader_agent.cards import cardcrypto
from schemas.base import luhn_ok


@dataclass(frozen=True)
class ProviderSpec:
    """How a provider's cards look: kind, AID, label and the BIN its PANs start with."""

    provider: str
    kind: Literal["emv", "transit"]
    aid: str
    label: str
    bin: str


PROVIDERS: dict[str, ProviderSpec] = {
    "bank-a": ProviderSpec("bank-a", "emv", "A000000333010101", "UNIONPAY DEBIT", "622202"),
    "bank-b": ProviderSpec("bank-b", "emv", "A0000000031010", "VISA CREDIT", "476173"),
    "transit": ProviderSpec("transit", "transit", "A000000632010105", "TRANSIT PURSE", "310000"),
}


def provider_spec(provider: str) -> ProviderSpec:
    try:
        return PROVIDERS[provider]
    except KeyError:
        raise ConfigError(f"unknown card provider {provider!r}; known: "
                          f"{', '.join(sorted(PROVIDERS))}") from None


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class IssuerKeys(BaseModel):
    """A provider's issuing keys (hex): EMV IMK-AC, card-auth signing key, transit load key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    imk_ac: str
    card_auth_private: str
    load_key: str
    tac_key: str
    pan_token_key: str

    @property
    def ca_key_id(self) -> str:
        return f"{self.provider}.card-auth.1"

    @property
    def card_auth_public(self) -> bytes:
        """The provider's card-authentication public key (what terminals get)."""
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self.card_auth_private))
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def load_or_create(cls, provider: str, home: Path | None = None) -> IssuerKeys:
        provider_spec(provider)
        path = (home or sub_dir("issuers")) / f"{provider}.json"
        if path.exists():
            return cls.model_validate_json(path.read_text())
        keys = cls(
            provider=provider,
            imk_ac=secrets.token_bytes(16).hex().upper(),
            card_auth_private=secrets.token_bytes(32).hex().upper(),
            load_key=secrets.token_bytes(16).hex().upper(),
            tac_key=secrets.token_bytes(16).hex().upper(),
            pan_token_key=secrets.token_bytes(32).hex().upper(),
        )
        _write_private(path, keys.model_dump_json(indent=2))
        return keys


class CardProfile(BaseModel):
    """A personalised card: identity, application, and its secrets (hex)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    card_id: str
    provider: str
    kind: Literal["emv", "transit"]
    aid: str
    label: str
    pan: str
    psn: str = "00"
    expiry: str  # YYMMDD
    icc_master_key: str = ""
    card_private_key: str = ""
    card_public_key: str = ""
    card_certificate: str = ""  # the provider's signature over the certificate (hex)
    ca_key_id: str = ""
    pan_token: str = ""
    load_key: str = ""  # transit: the card's load key (DLK)
    tac_key: str = ""  # transit: the card's TAC key (DTK)
    initial_balance: int = 0

    def masked(self) -> str:
        return self.pan[:6] + "*" * (len(self.pan) - 10) + self.pan[-4:]


def make_pan(bin_: str, length: int = 16) -> str:
    """A random Luhn-valid PAN starting with ``bin_``."""
    body = bin_ + "".join(secrets.choice("0123456789") for _ in range(length - len(bin_) - 1))
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")  # pragma: no cover


def issue_card(provider: str, *, card_id: str | None = None, pan: str | None = None,
               expiry: str = "301231", balance: int = 0,
               issuer: IssuerKeys | None = None) -> CardProfile:
    """Personalise a new card for ``provider`` (keys derived from the issuer's keys)."""
    spec = provider_spec(provider)
    issuer = issuer or IssuerKeys.load_or_create(provider)
    pan = pan or make_pan(spec.bin)
    card_id = card_id or f"{provider}-{pan[-4:]}-{secrets.token_hex(2)}"
    if spec.kind == "transit":
        dlk = derive_card_key(bytes.fromhex(issuer.load_key), pan)
        dtk = derive_card_key(bytes.fromhex(issuer.tac_key), pan)
        return CardProfile(card_id=card_id, provider=provider, kind="transit", aid=spec.aid,
                           label=spec.label, pan=pan, expiry=expiry,
                           load_key=dlk.hex().upper(), tac_key=dtk.hex().upper(),
                           initial_balance=balance)
    imk = bytes.fromhex(issuer.imk_ac)
    icc_mk = cardcrypto.derive_icc_master_key(imk, pan, "00")
    priv, pub = cardcrypto.new_card_key()
    token = PanTokenizer(bytes.fromhex(issuer.pan_token_key)).token(pan)
    ca = Signer(issuer.ca_key_id, bytes.fromhex(issuer.card_auth_private))
    cert = cardcrypto.issue_card_certificate(ca, provider, pub, pan, token, expiry[:4])
    return CardProfile(card_id=card_id, provider=provider, kind="emv", aid=spec.aid,
                       label=spec.label, pan=pan, expiry=expiry,
                       icc_master_key=icc_mk.hex().upper(), card_private_key=priv.hex().upper(),
                       card_public_key=pub.hex().upper(),
                       card_certificate=b64d(cert.signature).hex().upper(),
                       ca_key_id=ca.key_id, pan_token=token)


# -- files ------------------------------------------------------------------------------

def cards_dir() -> Path:
    return sub_dir("cards")


def save_profile(profile: CardProfile, home: Path | None = None) -> Path:
    path = (home or cards_dir()) / f"{profile.card_id}.json"
    _write_private(path, profile.model_dump_json(indent=2))
    return path


def load_profile(card_id: str, home: Path | None = None) -> CardProfile:
    path = (home or cards_dir()) / f"{card_id}.json"
    if not path.exists():
        raise ConfigError(f"no card {card_id!r} (issue one with `cardbus cards issue`)")
    return CardProfile.model_validate_json(path.read_text())


def list_profiles(home: Path | None = None) -> list[CardProfile]:
    d = home or cards_dir()
    return [CardProfile.model_validate_json(p.read_text()) for p in sorted(d.glob("*.json"))
            if not p.name.endswith(".state.json")]


class CardState:
    """A card's persisted counters (ATC, balance, load sequence) in ``<card>.state.json``."""

    def __init__(self, path: Path | None, **initial: int) -> None:
        self.path = path
        self.values: dict[str, int] = dict(initial)
        if path is not None and path.exists():
            self.values.update({k: int(v) for k, v in json.loads(path.read_text()).items()})

    @classmethod
    def for_profile(cls, profile: CardProfile, home: Path | None = None) -> CardState:
        path = (home or cards_dir()) / f"{profile.card_id}.state.json"
        return cls(path, atc=0, balance=profile.initial_balance, online_seq=0)

    def __getitem__(self, key: str) -> int:
        return self.values[key]

    def set(self, **values: int) -> None:
        """Update and persist (atomic replace) before the card answers."""
        self.values.update(values)
        if self.path is not None:
            _write_private(self.path, json.dumps(self.values))
