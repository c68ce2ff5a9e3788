"""What a provider says about itself on the bus: its registration, its key set and (a bank) its
card-management policy.

All go to compacted topics keyed by provider id and carry the provider's whole current state,
so publishing them again at every start is idempotent. Sealed with the provider's identity key:
the registration also proves possession of the key it declares.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from agents.providers.base import ProviderAdapter
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.keystore import b64e
from cardbus.crypto.signing import Verifier
from schemas.base import header
from schemas.cardmgmt import CardPolicyPublished
from schemas.providers import KeyUsage as KeyUsageName
from schemas.providers import (
    ProviderAdmitted,
    ProviderKeysProvisioned,
    ProviderRegistered,
    ProvisionedKey,
)


def registration(adapter: ProviderAdapter, hsm: ProviderHsm, now: datetime) -> ProviderRegistered:
    """The provider's registration, sealed with its identity key (proof of possession)."""
    pid = adapter.provider_id
    ev = ProviderRegistered(
        **header(f"provider:{pid}", pid, now), provider_id=pid, name=adapter.name,
        kind=adapter.kind, bin_ranges=adapter.bin_ranges,
        payment_aids=(adapter.aid,) if adapter.kind == "bank" else (),
        transit_aids=adapter.transit_aids, identity_key_id=hsm.verifier.key_id,
        identity_public_key=b64e(hsm.verifier.public_bytes()),
        card_auth_key_id=hsm.card_ca_verifier.key_id,
        card_auth_public_key=b64e(hsm.card_ca_verifier.public_bytes()))
    return hsm.sign_event(ev)


def key_provisioning(hsm: ProviderHsm, now: datetime) -> ProviderKeysProvisioned:
    """The provider's PIN and PAN keys and its cards' security-domain master (the platform runs
    their secure channel) as TR-31 blocks under the KBPK, sealed."""
    keys = []
    for usage, prefix in ((KeyUsage.PIN_ENC, "pin"), (KeyUsage.PAN_ENC, "pan"),
                          (KeyUsage.GP_ISD_MASTER, "isd")):
        rec = hsm.keys.record(f"{prefix}:{hsm.provider_id}")
        keys.append(ProvisionedKey(key_id=f"{rec.key_id}.v{rec.version}",
                                   usage=cast(KeyUsageName, usage.value),
                                   algorithm="AES", kcv=rec.kcv,
                                   key_block=hsm.export_key_block(usage)))
    ev = ProviderKeysProvisioned(
        **header(f"provider:{hsm.provider_id}", hsm.provider_id, now),
        provider_id=hsm.provider_id, kbpk_id=f"kbpk:{hsm.provider_id}", keys=tuple(keys))
    return hsm.sign_event(ev)


def card_policy(adapter: ProviderAdapter, hsm: ProviderHsm, now: datetime) -> CardPolicyPublished:
    """A bank's card-management policy, sealed: the catalogue applications the platform may
    install on its cards (``adapter.card_apps``); its own payment application is protected."""
    pid = adapter.provider_id
    ev = CardPolicyPublished(
        **header(f"provider:{pid}", pid, now), issuer_id=pid, installable=adapter.card_apps,
        protected_aids=(adapter.aid,))
    return hsm.sign_event(ev)


def admission_for(adapter: ProviderAdapter, identity: Verifier,
                  now: datetime | None = None) -> ProviderAdmitted:
    """What the operator admits a provider with (unsealed: the operator seals it): its id and
    kind, the identity key it must register with, its BIN ranges and AIDs, nothing more."""
    return ProviderAdmitted(
        **header("platform", adapter.provider_id, now), provider_id=adapter.provider_id,
        kind=adapter.kind, identity_key_id=identity.key_id,
        identity_public_key=b64e(identity.public_bytes()), bin_ranges=adapter.bin_ranges,
        payment_aids=(adapter.aid,) if adapter.kind == "bank" else (),
        transit_aids=adapter.transit_aids, reason="admitted by the operator")
