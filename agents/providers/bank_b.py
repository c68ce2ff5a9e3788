"""Bank B: a Visa-style credit issuer (AID A0000000031010, BINs 476173-476179), ledger in CNY,
with a lower per-transaction limit and a lower floor for the online PIN."""

from agents.providers.base import ProviderAdapter
from schemas.values import BinRange

adapter = ProviderAdapter(
    provider_id="bank-b",
    name="Bank B (credit)",
    kind="bank",
    aid="A0000000031010",
    label="VISA CREDIT",
    bin_ranges=(BinRange(low="476173", high="476179"),),
    card_bin="476173",
    currency="CNY",
    per_txn_limit=200_000,
    cvm_floor=50_000,  # a credit card: an online PIN above 500.00
)
