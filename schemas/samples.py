"""Valid sample events, one per type, for tests, benchmarks and demos.

Every value is made up: masked PANs and tokens are not derived from any card, ciphertexts,
cryptograms, keys and seals are filler of the right shape. ``sample_event(name, **changes)``
returns a validated event; ``sample_raw(name)`` its JSON object.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from schemas.base import Event
from schemas.registry import ALL_EVENTS, model_for, type_name

_B64 = base64.urlsafe_b64encode(bytes(range(32))).decode()
_AT = "2025-01-15T10:30:00Z"

_BLOB = {"key_id": "platform/pan/1", "alg": "AES-256-GCM", "nonce": "AAAAAAAAAAAAAAAA",
         "ct": _B64}
_WRAP = {**_BLOB, "key_id": "T-0001/wrap", "epk": _B64,
         "alg": "ECDH-X25519-HKDF-SHA256-AES-256-GCM"}
_MERCHANT = {"merchant_id": "M-0001", "name": "Corner Shop", "mcc": "5411"}
_MONEY = {"amount": 1250, "currency": "CNY"}
_CARD = {
    "aid": "A0000003330101", "masked_pan": "622202******1234", "pan_token": "tok_" + "a" * 24,
    "pan_encrypted": _BLOB, "psn": "01", "atc": 17, "arqc": "0123456789ABCDEF",
    "cdol_data": "000000001250" + "00" * 10, "unpredictable_number": "1A2B3C4D",
    "card_auth": "passed", "card_certificate": _B64,
}
_SEAL = {"alg": "Ed25519", "key_id": "platform/identity/1", "value": _B64}

_BODIES: dict[str, dict[str, Any]] = {
    "ProviderRegistered": {
        "provider_id": "bank-a", "name": "Bank A", "kind": "bank",
        "bin_ranges": [{"low": "622202", "high": "622209"}], "identity_key_id": "bank-a/id/1",
        "identity_public_key": _B64, "card_auth_key_id": "bank-a/ca/1",
        "card_auth_public_key": _B64,
    },
    "ProviderKeysProvisioned": {
        "provider_id": "bank-a", "kbpk_id": "bank-a/kbpk/1",
        "keys": [{"key_id": "bank-a/pin/1", "usage": "pin_enc", "algorithm": "TDES",
                  "kcv": "0A1B2C", "key_block": "B0096P0TE00N0000" + "0123456789ABCDEF" * 5}],
    },
    "TerminalEnrolled": {
        "terminal_id": "T-0001", "merchant": _MERCHANT, "identity_key_id": "T-0001/id",
        "identity_public_key": _B64, "wrap_key_id": "T-0001/wrap", "wrap_public_key": _B64,
    },
    "TerminalStatusChanged": {"terminal_id": "T-0001", "status": "suspended",
                              "reason": "reported stolen"},
    "TerminalKeysIssued": {
        "terminal_id": "T-0001",
        "keys": [{"key_id": "T-0001/mac/1", "usage": "mac", "kcv": "ABCDEF", "wrapped": _WRAP}],
        "card_auth_keys": [{"provider_id": "bank-a", "key_id": "bank-a/ca/1",
                            "public_key": _B64}],
        "status": "active",
    },
    "CardTapped": {"terminal_id": "T-0001", "reader": "Virtual PCD 00 00",
                   "atr": "3B8F8001804F0CA000000306030001000000006A", "card": _CARD},
    "PaymentRequested": {
        "terminal_id": "T-0001", "merchant": _MERCHANT, "amount": _MONEY, "card": _CARD,
        "pin_block": "0123456789ABCDEF", "pin_key_id": "T-0001/pin/1",
    },
    "PaymentCancelled": {"terminal_id": "T-0001", "request_event_id": "e" * 32,
                         "pan_token": "tok_" + "a" * 24, "reason": "no_answer"},
    "AuthorizationRequested": {
        "provider_id": "bank-a", "request_event_id": "e" * 32, "terminal_id": "T-0001",
        "merchant": _MERCHANT, "amount": _MONEY, "card": _CARD,
        "pin_block": "FEDCBA9876543210", "pin_key_id": "bank-a/pin/1",
    },
    "AuthorizationDecided": {
        "provider_id": "bank-a", "request_event_id": "e" * 32, "pan_token": "tok_" + "a" * 24,
        "amount": _MONEY, "approved": True, "response_code": "00", "auth_code": "A1B2C3",
        "arpc": "0011223344556677", "chain_id": "bank-a.p0", "sequence": 5, "prev_hash": "00" * 32,
    },
    "PaymentCompleted": {
        "terminal_id": "T-0001", "provider_id": "bank-a", "masked_pan": "622202******1234",
        "amount": _MONEY, "approved": True, "response_code": "00", "auth_code": "A1B2C3",
        "arpc": "0011223344556677", "message": "APPROVED",
    },
    "ReversalRequested": {"provider_id": "bank-a", "original_event_id": "e" * 32,
                          "pan_token": "tok_" + "a" * 24, "amount": _MONEY, "reason": "timeout"},
    "ReversalCompleted": {"provider_id": "bank-a", "original_event_id": "e" * 32,
                          "pan_token": "tok_" + "a" * 24, "amount": _MONEY, "reversed": True,
                          "response_code": "00"},
    "TransitLoadRequested": {
        "terminal_id": "T-0001", "operator_id": "transit", "funding_payment_id": "pay-1",
        "funding_pan_token": "tok_" + "a" * 24, "aid": "A000000632010105",
        "card_token": "tok_" + "c" * 24, "amount": _MONEY, "balance_before": 300,
        "load_counter": 4, "card_random": "0A0B0C0D", "mac1": "11223344",
    },
    "TransitLoadAuthorized": {
        "operator_id": "transit", "request_event_id": "f" * 32, "terminal_id": "T-0001",
        "card_token": "tok_" + "c" * 24, "amount": _MONEY, "new_balance": 1550,
        "load_counter": 4, "date_time": "2025-01-15T10:30:00Z", "mac2": "55667788",
    },
    "TransitLoadApplied": {
        "terminal_id": "T-0001", "operator_id": "transit", "request_event_id": "f" * 32,
        "funding_pan_token": "tok_" + "a" * 24, "card_token": "tok_" + "c" * 24,
        "amount": _MONEY, "new_balance": 1550, "load_counter": 5, "tac": "99AABBCC",
    },
    "TransitLoadAborted": {
        "terminal_id": "T-0001", "operator_id": "transit", "request_event_id": "f" * 32,
        "funding_pan_token": "tok_" + "a" * 24, "card_token": "tok_" + "c" * 24,
        "reason": "card removed before the load",
    },
    "TransitLoadConfirmed": {"operator_id": "transit", "request_event_id": "f" * 32,
                             "card_token": "tok_" + "c" * 24, "confirmed": True,
                             "outcome": "booked", "balance": 1550},
    "SettlementBatchClosed": {
        "provider_id": "bank-a", "batch_id": "bank-a-2025-01-15", "opened_at": _AT,
        "closed_at": "2025-01-15T23:59:59Z", "first_sequence": 0, "last_sequence": 41,
        "declined_count": 2,
        "totals": [{"currency": "CNY", "approved_count": 40, "approved_amount": 50000,
                    "reversed_count": 1, "reversed_amount": 1250, "net_amount": 48750}],
    },
    "CardIssued": {
        "provider_id": "bank-a", "pan_token": "tok_" + "b" * 24, "masked_pan": "622202******1234",
        "account_id": "acct-1", "expiry": "3012", "currency": "CNY", "opening_balance": 100000,
        "per_txn_limit": 500000, "pin_verification_encrypted": _BLOB,
    },
    "SettlementCutoverRequested": {"provider_id": "bank-a", "batch_id": "bank-a-2025-01-15"},
    "CardPolicyPublished": {"issuer_id": "bank-a", "installable": ["transit"],
                            "protected_aids": ["A000000333010101"]},
    "CardManagementRequested": {
        "terminal_id": "T-0001", "issuer_id": "bank-a",
        "operations": [{"action": "install", "app": "transit"}, {"action": "list"}]},
    "CardCommandsIssued": {
        "terminal_id": "T-0001", "batch": 1,
        "steps": [{"apdu": "AKQEAAigAAABUQAAAAA=", "label": "select ISD",
                   "expect": [0x9000, 0x6283]}]},
    "CardResponsesRelayed": {"terminal_id": "T-0001", "batch": 1,
                             "responses": [{"data": "bwqECKAAAAFRAAAA", "sw": 0x9000}]},
    "CardManagementCompleted": {
        "terminal_id": "T-0001", "issuer_id": "bank-a", "ok": True, "reason": "done",
        "card_life": "SECURED", "installed": ["A000000632010105"],
        "applications": [{"aid": "A000000632010105", "kind": "application", "life": 15}]},
    "PursePersonalisationRequested": {"operator_id": "transit", "issuer_id": "bank-a",
                                      "terminal_id": "T-0001", "app": "transit"},
    "PursePersonalisationPrepared": {
        "operator_id": "transit", "request_event_id": "e" * 32,
        "card_token": "tok_" + "c" * 24, "label": "TRANSIT PURSE", "number_encrypted": _BLOB,
        "load_key": {"key_id": "purse/load", "usage": "card_perso", "algorithm": "TDES",
                     "kcv": "0A1B2C", "key_block": "D0112E6TN00E0000" + "0123456789ABCDEF" * 6},
        "tac_key": {"key_id": "purse/tac", "usage": "card_perso", "algorithm": "TDES",
                    "kcv": "3D4E5F", "key_block": "D0112E6TN00E0000" + "FEDCBA9876543210" * 6}},
    "CardBlocked": {"provider_id": "bank-a", "pan_token": "tok_" + "b" * 24,
                    "masked_pan": "622202******1234", "reason": "lost"},
    "CardUnblocked": {"provider_id": "bank-a", "pan_token": "tok_" + "b" * 24,
                      "masked_pan": "622202******1234"},
    "IssuerScriptApplied": {"terminal_id": "T-0001", "pan_token": "tok_" + "b" * 24,
                            "request_event_id": "e" * 32, "script": "block", "sw": 0x9000},
    "IssuerScriptReported": {"provider_id": "bank-a", "pan_token": "tok_" + "b" * 24,
                             "terminal_id": "T-0001", "report_event_id": "f" * 32,
                             "script": "block", "sw": 0x9000},
    "ClockTicked": {"partition": 3},
    "KeyRevoked": {"key_id": "tmk:T-0001.v1", "owner": "terminal:T-0001",
                   "revoked_at": _AT, "reason": "terminal reported stolen"},
    "ProviderAdmitted": {
        "provider_id": "bank-a", "kind": "bank", "identity_key_id": "sign:provider:bank-a.v1",
        "identity_public_key": _B64, "bin_ranges": [{"low": "622202", "high": "622202"}],
        "payment_aids": ["A000000333010101"], "reason": "contract 2025-001",
    },
    "EventDeadLettered": {
        "reason": "payload: malformed JSON", "error_code": "decode", "field": None,
        "original_topic": "cardbus.taps", "original_partition": 0, "original_offset": 42,
        "original_b64": "e30=", "original_size": 2, "original_sha256": "44" * 32,
    },
    "AuditFindingReported": {
        "finding_id": "AB" * 32, "kind": "chain", "topic": "cardbus.provider-results",
        "partition": 2, "offset": 1207, "record_time": _AT,
        "reason": "chain bank-a.p2: sequence 14 follows 12: missing (deleted?)",
    },
}

_PRODUCERS = {"Provider": "provider:bank-a", "ProviderAdm": "cli", "Terminal": "platform",
              "Card": "terminal:T-0001",
              "PaymentReq": "terminal:T-0001", "TransitLoadReq": "terminal:T-0001",
              "TransitLoadApp": "terminal:T-0001", "TransitLoadAu": "provider:transit",
              "TransitLoadC": "provider:transit", "AuthorizationD": "provider:bank-a",
              "ReversalC": "provider:bank-a", "Settlement": "provider:bank-a",
              "CardIssued": "provider:bank-a", "CardPolicy": "provider:bank-a",
              "CardBlocked": "provider:bank-a", "CardUnblocked": "provider:bank-a",
              "CardManagementR": "terminal:T-0001", "CardResponses": "terminal:T-0001",
              "CardCommands": "platform", "CardManagementC": "platform",
              "PursePersonalisationP": "provider:transit", "IssuerScriptA": "terminal:T-0001",
              "AuditF": "audit"}


def _producer(name: str) -> str:
    for prefix, who in sorted(_PRODUCERS.items(), key=lambda kv: -len(kv[0])):
        if name.startswith(prefix):
            return who
    return "platform"


def sample_raw(name: str, *, sealed: bool = True) -> dict[str, Any]:
    """The JSON object of a valid ``name`` event (a fresh dict each call)."""
    model = model_for(name)
    raw: dict[str, Any] = {
        "type": name,
        "schema_version": model.model_fields["schema_version"].default,
        "event_id": "0123456789abcdef0123456789abcdef",
        "correlation_id": "pay-1",
        "occurred_at": _AT,
        "producer": _producer(name),
        **_deep_copy(_BODIES[name]),
    }
    if sealed:
        raw["seal"] = dict(_SEAL)
    return raw


def sample_event(name: str, **changes: Any) -> Event:
    """A valid ``name`` event; top-level ``changes`` (plain JSON values) applied first."""
    raw = sample_raw(name)
    raw.update(changes)
    return model_for(name).model_validate(raw)


def sample_events() -> list[Event]:
    """One sample of every event type."""
    return [sample_event(type_name(m)) for m in ALL_EVENTS]


def now() -> datetime:
    """The current UTC time (for producers; decision logic takes time from events)."""
    return datetime.now(UTC)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
