"""ISO 8583 (field 39) style response codes CardBus providers answer with: one lookup."""

from __future__ import annotations

APPROVED = "00"
PIN_REQUIRED = "1A"  # additional cardholder verification required: above the adapter's floor
# without an online PIN (a soft decline: try again with the PIN)
DO_NOT_HONOUR = "05"  # the platform's signature on the request did not verify
WRONG_CURRENCY = "12"  # invalid transaction: the account is in another currency
INVALID_CARD = "14"  # unknown card / account
FORMAT_ERROR = "30"  # the request's card data is malformed (cryptogram data not CDOL1)
NO_ORIGINAL = "25"  # reversal: the original authorization is not known
LOST_CARD = "41"  # the issuer reports the card lost
STOLEN_CARD = "43"  # the issuer reports the card stolen
INSUFFICIENT_FUNDS = "51"
EXPIRED_CARD = "54"
INCORRECT_PIN = "55"
EXCEEDS_LIMIT = "61"
PIN_TRIES_EXCEEDED = "75"  # the card is blocked by the PIN-try counter
BAD_CRYPTOGRAM = "82"  # the ARQC does not verify, or covers another transaction
ISSUER_UNAVAILABLE = "91"  # the platform's timeout answer
REPLAYED_ATC = "94"  # duplicate transmission: ATC replayed or outside the window
SUSPENDED_TERMINAL = "58"  # transaction not permitted to the terminal
NO_ROUTE = "92"  # no provider for this card (no BIN / AID route)
SYSTEM_ERROR = "96"
CARD_AUTH_FAILED = "Q1"  # the terminal reports the card failed card authentication

MESSAGES: dict[str, str] = {
    APPROVED: "approved",
    DO_NOT_HONOUR: "do not honour",
    WRONG_CURRENCY: "invalid transaction (currency)",
    INVALID_CARD: "invalid card",
    FORMAT_ERROR: "format error",
    NO_ORIGINAL: "original not found",
    LOST_CARD: "lost card",
    STOLEN_CARD: "stolen card",
    INSUFFICIENT_FUNDS: "insufficient funds",
    EXPIRED_CARD: "expired card",
    INCORRECT_PIN: "incorrect PIN",
    EXCEEDS_LIMIT: "exceeds amount limit",
    PIN_TRIES_EXCEEDED: "PIN tries exceeded, card blocked",
    BAD_CRYPTOGRAM: "card cryptogram failed",
    ISSUER_UNAVAILABLE: "issuer unavailable",
    REPLAYED_ATC: "card counter replayed",
    SUSPENDED_TERMINAL: "terminal not permitted",
    NO_ROUTE: "no route to issuer",
    SYSTEM_ERROR: "system error",
    PIN_REQUIRED: "PIN required",
    CARD_AUTH_FAILED: "card authentication failed",
}


def message(code: str) -> str:
    """A short human text for a response code."""
    return MESSAGES.get(code, f"response {code}")
