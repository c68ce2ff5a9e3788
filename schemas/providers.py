"""Provider events: a bank or transit operator joins, and provisions its keys to the platform.

Topics: ``cardbus.providers`` and ``cardbus.provider-keys`` (both compacted, keyed by provider).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import B64, Event, ProviderId
from schemas.upcast import Raw, upcaster
from schemas.values import Aid, BinRange, Kcv, KeyId, Text, Tr31KeyBlock


class ProviderRegistered(Event):
    """A provider joined (or updated its registration): the platform learns its routing."""

    SEALED_BY: ClassVar[str] = "provider identity key (proof of possession)"

    type: Literal["ProviderRegistered"] = "ProviderRegistered"
    schema_version: Literal[2] = 2

    provider_id: ProviderId
    name: Text
    kind: Literal["bank", "transit"]
    bin_ranges: tuple[BinRange, ...] = ()
    payment_aids: tuple[Aid, ...] = Field(
        default=(), description="the payment application AIDs on the bank's cards (terminals "
                                "select these; v2)")
    transit_aids: tuple[Aid, ...] = ()
    identity_key_id: KeyId
    identity_public_key: B64 = Field(description="Ed25519 public key, raw 32 bytes, base64url")
    card_auth_key_id: KeyId
    card_auth_public_key: B64 = Field(
        description="public key the terminal checks card certificates against (DER, base64url)"
    )

    @model_validator(mode="after")
    def _routable(self) -> ProviderRegistered:
        if self.kind == "bank" and not self.bin_ranges:
            raise ValueError("bin_ranges: a bank provider needs at least one BIN range")
        if self.kind == "transit" and not self.transit_aids:
            raise ValueError("transit_aids: a transit provider needs at least one AID")
        return self


@upcaster("ProviderRegistered", 1)
def _provider_registered_v1_to_v2(raw: Raw) -> Raw:
    """v1 named no payment AIDs: terminals learn none from it until the bank re-registers."""
    raw["payment_aids"] = []
    raw["schema_version"] = 2
    return raw


class ProviderAdmitted(Event):
    """An operator admitted a provider: its id, the identity key it must register with, and the
    only card ranges (BIN ranges, payment and transit AIDs) the platform may route to it. A
    registration is routed only once an admission for its id, key and ranges exists."""

    SEALED_BY: ClassVar[str] = "operator key (the platform operator's admission)"

    type: Literal["ProviderAdmitted"] = "ProviderAdmitted"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    kind: Literal["bank", "transit"]
    identity_key_id: KeyId
    identity_public_key: B64 = Field(description="Ed25519 public key, raw 32 bytes, base64url")
    bin_ranges: tuple[BinRange, ...] = ()
    payment_aids: tuple[Aid, ...] = ()
    transit_aids: tuple[Aid, ...] = ()
    reason: Text


# the same strings as cardbus.crypto.keys.KeyUsage (schemas do not import the crypto core)
KeyUsage = Literal["pin_enc", "pin_verify", "mac", "pan_enc", "pan_token", "emv_imk_ac",
                   "transit_load", "transit_tac", "gp_isd_master", "card_perso"]


class ProvisionedKey(BaseModel):
    """One key, as a TR-31 key block encrypted under the provider<->platform KBPK."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: KeyId
    usage: KeyUsage
    algorithm: Literal["TDES", "AES", "HMAC"]
    kcv: Kcv
    key_block: Tr31KeyBlock = Field(description="TR-31 key block, key encrypted under kbpk_id")


class ProviderKeysProvisioned(Event):
    """The provider's current key set for the platform (the whole set: compaction keeps one)."""

    SEALED_BY: ClassVar[str] = "provider identity key"

    type: Literal["ProviderKeysProvisioned"] = "ProviderKeysProvisioned"
    schema_version: Literal[1] = 1

    provider_id: ProviderId
    kbpk_id: KeyId = Field(description="the provider<->platform key-block protection key")
    keys: tuple[ProvisionedKey, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ProviderKeysProvisioned:
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("keys: key_id values must be unique")
        return self
