"""Bank A: a UnionPay-style debit issuer (AID A000000333010101, BIN 622202), ledger in CNY."""

from agents.providers.base import ProviderAdapter
from schemas.values import BinRange

adapter = ProviderAdapter(
    provider_id="bank-a",
    name="Bank A (debit)",
    kind="bank",
    aid="A000000333010101",
    label="UNIONPAY DEBIT",
    bin_ranges=(BinRange(low="622202", high="622202"),),
    card_bin="622202",
    currency="CNY",
    per_txn_limit=500_000,
)
