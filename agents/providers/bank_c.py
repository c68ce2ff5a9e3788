"""Bank C: a Mastercard-style debit issuer (AID A0000000041010, BIN 535522), ledger in CNY.

Not started by the demo: it is the provider that joins a running system (see the tests)."""

from agents.providers.base import ProviderAdapter
from schemas.values import BinRange

adapter = ProviderAdapter(
    provider_id="bank-c",
    name="Bank C (debit)",
    kind="bank",
    aid="A0000000041010",
    label="MC DEBIT",
    bin_ranges=(BinRange(low="535522", high="535522"),),
    card_bin="535522",
    currency="CNY",
)
