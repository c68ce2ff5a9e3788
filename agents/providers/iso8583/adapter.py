"""Bank ISO: a debit issuer whose authorization host speaks ISO 8583 (AID A0000000651010,
BIN 356999), reached through the bridge (``agents.providers.iso8583.app``).

Its decisions are the host's, not the shared Python rules: ``authorize`` and ``reverse`` are
not used by its worker. Issuing a card personalises it with the bank's keys like any bank (the
bridge's HSM holds them) and also enrols it in the host's card file, so the host knows it at
its first use.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.providers.base import IssuedCard, ProviderAdapter
from agents.providers.iso8583.cardfile import HostCard, card_file_path, enrol
from agents.providers.iso8583.hsm import BridgeHsm, add_bridge_keys, ensure_bridge_keys
from cardbus.crypto.hsm import ProviderHsm
from cardbus.vault import FileKeyStore
from schemas.values import BinRange

CURRENCY_NUMERIC = {"CNY": "156", "EUR": "978", "USD": "840", "JPY": "392"}


@dataclass(frozen=True)
class IsoBridgeAdapter(ProviderAdapter):
    """A bank behind an ISO 8583 host: the bridge runs it (its own Faust app)."""

    deadline_s: float = 2.0  # no host answer in this time: 91 and a reversal (< the platform's)

    def issue_card(self, hsm: ProviderHsm, *, pin: str, opening_balance: int,
                   expiry: str = "301231", pan: str | None = None,
                   card_id: str | None = None) -> IssuedCard:
        """Personalise the card, then enrol it in the host's card file (the one in the state
        folder of the key store's owner). A card issued from an in-memory key store (tests,
        benchmarks) is enrolled nowhere: no host could open a card file under a key that lives
        only in this process, and the state folder's file belongs to the real bridge."""
        issued = super().issue_card(hsm, pin=pin, opening_balance=opening_balance,
                                    expiry=expiry, pan=pan, card_id=card_id)
        if not isinstance(hsm.keys, FileKeyStore):
            add_bridge_keys(hsm.keys, self.provider_id)
            return issued
        home = hsm.keys.path.parents[2]  # <state>/parties/provider-<id>/keystore.json
        ensure_bridge_keys(self.provider_id, home)
        hsm.keys.load_records(FileKeyStore(f"provider-{self.provider_id}", home).records())
        bridge = BridgeHsm(self.provider_id, hsm.keys)
        card = issued.card
        enrol(card_file_path(home), bridge.card_file_cipher, HostCard(
            pan=issued.profile.pan, expiry=card.expiry, balance=opening_balance,
            pvv=bridge.card_secret(card.pin.sealed_value, card.pan_token), pvki=card.pin.pvki,
            psn=card.psn, currency=CURRENCY_NUMERIC[self.currency]))
        return issued


adapter = IsoBridgeAdapter(
    provider_id="bank-iso",
    name="Bank ISO (ISO 8583 host)",
    kind="bank",
    aid="A0000000651010",
    label="ISO DEBIT",
    bin_ranges=(BinRange(low="356999", high="356999"),),
    card_bin="356999",
    currency="CNY",
    replayable=False,
)
