"""The provider adapter interface, and how adapters are found.

A provider (a bank, a transit operator) is a ``ProviderAdapter``: who it is, which cards it
issues (BIN ranges or transit AIDs), and four operations, each a pure function over its ledger
state: ``authorize``, ``reverse``, ``close_batch`` and ``issue_card``. The Faust app that runs
it (``agents.providers.app``) is the same for every provider.

Adapters are found through the ``cardbus.providers`` entry-point group, so a separately
installed package adds a bank by declaring, in its own pyproject::

    [project.entry-points."cardbus.providers"]
    bank-c = "my_bank.adapter:adapter"

where ``adapter`` is a ``ProviderAdapter`` instance (or a zero-argument callable returning one).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import Literal

from agents.providers import decide
from agents.providers.state import (
    Account,
    CardRecord,
    ChainHead,
    DecisionNote,
    OpenBatch,
    PinCheck,
)
from cardbus.cardprofile import CardProfile, make_pan
from cardbus.crypto.hsm import ProviderHsm
from cardbus.crypto.issued import CardProfile as HsmCardProfile
from cardbus.errors import ConfigError
from schemas.base import Event, header, mask_pan
from schemas.ledger import CardIssued
from schemas.payments import AuthorizationDecided, AuthorizationRequested, ReversalRequested
from schemas.values import BinRange

ENTRY_POINT_GROUP = "cardbus.providers"


@dataclass(frozen=True)
class IssuedCard:
    """A new card: the profile that personalises it, and the provider's ledger records."""

    profile: CardProfile
    card: CardRecord
    account: Account


@dataclass(frozen=True)
class ProviderAdapter:
    """One provider: identity, card ranges, currency, limits, and the decision functions."""

    provider_id: str
    name: str
    kind: Literal["bank", "transit"]
    aid: str
    label: str
    bin_ranges: tuple[BinRange, ...] = ()
    transit_aids: tuple[str, ...] = ()
    currency: str = "CNY"
    per_txn_limit: int = 500_000
    cvm_floor: int = decide.DEFAULT_CVM_FLOOR  # above it, an online PIN is required
    card_bin: str = ""
    replayable: bool = True  # False: a host outside CardBus decides; audit cannot re-derive
    card_apps: tuple[str, ...] = ("transit",)  # a bank lets the platform install these

    # -- the four operations (pure; override to change a provider's rules) -------------------

    def authorize(self, req: AuthorizationRequested, *, card: CardRecord | None,
                  account: Account | None, chain: ChainHead, batch: OpenBatch,
                  processed: AuthorizationDecided | None,
                  crypto: decide.IssuerCrypto, now: datetime | None = None
                  ) -> decide.Authorized:
        """Decide on an authorization request (``now``: the provider's clock)."""
        return decide.authorize(req, card=card, account=account, chain=chain, batch=batch,
                                processed=processed, crypto=crypto, now=now,
                                cvm_floor=self.cvm_floor)

    def reverse(self, rev: ReversalRequested, *, account: Account | None, batch: OpenBatch,
                decision: AuthorizationDecided | DecisionNote | None,
                crypto: decide.IssuerCrypto) -> decide.Reversed:
        """Apply a reversal."""
        return decide.reverse(rev, account=account, batch=batch, decision=decision,
                              crypto=crypto)

    def close_batch(self, *, batch_id: str, closed_at_event: Event, batch: OpenBatch,
                    crypto: decide.IssuerCrypto) -> decide.Settled:
        """Close the open settlement batch."""
        return decide.close_batch(batch_id=batch_id, closed_at_event=closed_at_event,
                                  batch=batch, crypto=crypto)

    def issue_card(self, hsm: ProviderHsm, *, pin: str, opening_balance: int,
                   expiry: str = "301231", pan: str | None = None,
                   card_id: str | None = None) -> IssuedCard:
        """Personalise a card with this provider's keys and open its account."""
        if self.kind != "bank":
            raise ConfigError(f"{self.provider_id} issues transit cards, not payment cards")
        pan = pan or make_pan(self.card_bin)
        issued = hsm.issue_card(pan, pin, expiry[:4])
        cert = issued.certificate
        profile = CardProfile(
            card_id=card_id or f"{self.provider_id}-{pan[-4:]}-{secrets.token_hex(2)}",
            provider=self.provider_id, kind="emv", aid=self.aid, label=self.label, pan=pan,
            psn=issued.psn, expiry=expiry, icc_master_key=issued.icc_master_key.hex().upper(),
            card_private_key=issued.card_private_key.hex().upper(),
            card_public_key=_b64_to_hex(cert.card_public_key),
            card_certificate=_b64_to_hex(cert.signature), ca_key_id=cert.ca_key_id,
            pan_token=issued.pan_token, initial_balance=opening_balance)
        profile = _with_security_domain(profile, issued)
        account_id = f"acct-{issued.pan_token[4:20]}"
        record = CardRecord(pan_token=issued.pan_token, masked_pan=mask_pan(pan),
                            account_id=account_id, psn=issued.psn, expiry=expiry[:4],
                            pin=PinCheck(pvki=issued.pvki, sealed_value=hsm.seal_card_secret(
                                issued.pvv, issued.pan_token)),
                            per_txn_limit=self.per_txn_limit)
        account = Account(account_id=account_id, currency=self.currency,
                          opening_balance=opening_balance, balance=opening_balance)
        return IssuedCard(profile, record, account)


def card_issued_event(issued: IssuedCard, hsm: ProviderHsm, now: datetime) -> CardIssued:
    """The sealed event that opens ``issued``'s record and account in the provider's ledger."""
    card, account = issued.card, issued.account
    ev = CardIssued(
        **header(f"provider:{hsm.provider_id}", card.pan_token[:64], now),
        provider_id=hsm.provider_id,
        pan_token=card.pan_token, masked_pan=card.masked_pan, account_id=card.account_id,
        psn=card.psn, expiry=card.expiry, currency=account.currency,
        opening_balance=account.opening_balance, per_txn_limit=card.per_txn_limit,
        pvki=card.pin.pvki, pin_verification_encrypted=card.pin.sealed_value)
    return hsm.sign_event(ev)


def _with_security_domain(profile: CardProfile, issued: HsmCardProfile) -> CardProfile:
    """The profile with the card's issuer security domain keys and its script MAC key."""
    keys = issued.isd_keys
    if keys is None:
        return profile
    return profile.model_copy(update={
        "icc_smi_key": issued.icc_mk_smi.hex().upper(), "isd_enc": keys.enc.hex().upper(),
        "isd_mac": keys.mac.hex().upper(), "isd_dek": keys.dek.hex().upper(),
        "isd_kvn": keys.version, "isd_kdd": issued.isd_kdd.hex().upper()})


def _b64_to_hex(text: str) -> str:
    from cardbus.crypto.keystore import b64d

    return b64d(text).hex().upper()


def discover() -> dict[str, ProviderAdapter]:
    """Every installed provider adapter, by provider id (entry-point group
    ``cardbus.providers``)."""
    found: dict[str, ProviderAdapter] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        adapter = obj() if callable(obj) and not isinstance(obj, ProviderAdapter) else obj
        if not isinstance(adapter, ProviderAdapter):
            raise ConfigError(f"entry point {ep.name} ({ep.value}) is not a ProviderAdapter")
        if adapter.provider_id != ep.name:
            raise ConfigError(f"entry point {ep.name} names adapter {adapter.provider_id}")
        found[adapter.provider_id] = adapter
    return found


def adapter_for(provider_id: str) -> ProviderAdapter:
    """The installed adapter for ``provider_id`` (a clear error listing the known ones)."""
    adapters = discover()
    try:
        return adapters[provider_id]
    except KeyError:
        known = ", ".join(sorted(adapters)) or "none"
        raise ConfigError(f"no provider adapter {provider_id!r} is installed (known: {known})"
                          ) from None
