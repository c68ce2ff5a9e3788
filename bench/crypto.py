"""``cardbus bench crypto``: operations per second of the crypto core, one core, this machine.

Each figure is a loop of the real operation (role facades with cached key objects, as the
agents use them) for about ``seconds``; the per-payment figures run every crypto step one
payment costs on the platform side and on the provider side.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import cryptography
from cryptography.hazmat.backends.openssl.backend import backend as _openssl

from cardbus.crypto import emv, wrap
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cardbus.crypto.keys import KeyAlg, KeyUsage, new_key
from cardbus.crypto.keystore import KeyStore, StorageKeyring
from cardbus.machine import describe
from schemas.base import EncryptedBlob, Event, Hex, Money


class BenchPaymentRequested(Event):
    """A payment-request-sized event (about 600 bytes canonical) for the benchmark."""

    type: Literal["BenchPaymentRequested"] = "BenchPaymentRequested"
    schema_version: Literal[1] = 1
    terminal_id: str
    amount: Money
    pan: EncryptedBlob
    masked_pan: str
    pin_key_id: str
    pin_block: Hex
    arqc: Hex
    atc: int
    cdol1: Hex


def machine() -> dict[str, Any]:
    """The machine, plus the cryptography and OpenSSL versions."""
    return {**describe(), "cryptography": cryptography.__version__,
            "openssl": _openssl.openssl_version_text()}


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    fn()  # warm up caches
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def _luhn_pan(prefix: str, length: int = 16) -> str:
    body = prefix + "0" * (length - len(prefix) - 1)
    for check in "0123456789":
        digits = body + check
        total = sum((d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
                    for i, d in enumerate(int(c) for c in reversed(digits)))
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def _parties() -> tuple[PlatformHsm, ProviderHsm, TerminalHsm, list[Any]]:
    """A platform, a bank and a terminal with their keys exchanged (KBPK, key blocks,
    terminal enrollment), as the running system has them."""
    keyring = StorageKeyring({1: new_key(KeyAlg.AES)})
    plat = PlatformHsm(KeyStore(keyring))
    prov = ProviderHsm("bench-bank", KeyStore(keyring))
    term = TerminalHsm("T-BENCH", KeyStore(keyring))
    kbpk = new_key(KeyAlg.AES)
    plat.import_provider_kbpk("bench-bank", kbpk)
    prov.import_kbpk(kbpk)
    for usage in (KeyUsage.PIN_ENC, KeyUsage.PAN_ENC):
        plat.accept_key_block("bench-bank", usage, prov.export_key_block(usage))
    blobs = plat.enroll_terminal("T-BENCH", term.public_kex())
    for blob in blobs:
        term.install(blob)
    term.trust_card_ca(prov.card_ca_verifier)
    return plat, prov, term, blobs


def run(seconds: float = 0.5) -> dict[str, Any]:
    """Run every benchmark; returns the figures (the ``--json`` object)."""
    plat, prov, term, blobs = _parties()

    pan = _luhn_pan("622202")
    card = prov.issue_card(pan, "4321", "3012")
    corr = "pay-bench-0001"
    atc, un = 7, os.urandom(4)
    cdol1 = emv.arqc_data(amount=1250, currency_code=156, country_code=156, date="260101",
                          unpredictable_number=un, atc=atc)
    arqc = emv.generate_arqc(emv.derive_session_key(card.icc_master_key, atc), cdol1)
    pan_blob = term.encrypt_pan(pan, corr)
    pin_key_id, pin_block = term.pin_block("4321", pan)
    request = term.mac_event(BenchPaymentRequested(
        event_id="e" * 32, correlation_id=corr, occurred_at=datetime.now(UTC),
        producer="terminal:T-BENCH", terminal_id="T-BENCH",
        amount=Money(amount=1250, currency="CNY"), pan=pan_blob, masked_pan="622202******0000",
        pin_key_id=pin_key_id, pin_block=pin_block.hex().upper(), arqc=arqc.hex().upper(),
        atc=atc, cdol1=cdol1.hex().upper()))
    data = request.canonical_bytes()
    signature = plat.signer.sign(data)
    prov_sig = prov.signer.sign(data)
    # the terminal's wrapped PIN key, to time unwrapping
    tpk_blob = blobs[0]
    kex_priv = term._kex

    def platform_payment() -> None:
        plat.verify_terminal_mac("T-BENCH", request)
        pk, blk = plat.translate_pin("T-BENCH", "bench-bank", request.pin_key_id, pin_block,
                                     request.pan, corr)
        prov_pan = plat.reencrypt_pan("T-BENCH", "bench-bank", request.pan, corr)
        plat.pan_token("T-BENCH", request.pan, corr)
        plat.signer.sign(data)  # the routed request, signed
        prov.verifier.verify(prov_sig, data)  # the provider's signed decision
        plat.signer.sign(data)  # the result forwarded to the terminal
        payment_state["pk"], payment_state["blk"], payment_state["pan"] = pk, blk, prov_pan

    payment_state: dict[str, Any] = {}
    platform_payment()

    def provider_payment() -> None:
        plat.verifier.verify(signature, data)
        prov.pan_token(payment_state["pan"], corr)
        prov.authorize_cryptogram(payment_state["pan"], corr, "00", atc, cdol1, arqc,
                                  b"\x30\x30", last_atc=atc - 1)
        if not prov.verify_pin(payment_state["pk"], payment_state["blk"], payment_state["pan"],
                               corr, card.pvv):
            raise AssertionError("benchmark PIN did not verify")
        prov.signer.sign(data)

    imk = prov._k("imk", KeyUsage.EMV_IMK_AC)
    out: dict[str, Any] = {
        "arqc_verify_per_s": _rate(
            lambda: emv.verify_card_arqc(imk, pan, "00", atc, cdol1, arqc), seconds),
        "sign_per_s": _rate(lambda: plat.signer.sign(data), seconds),
        "verify_per_s": _rate(lambda: plat.verifier.verify(signature, data), seconds),
        "pin_translate_per_s": _rate(lambda: plat.translate_pin(
            "T-BENCH", "bench-bank", pin_key_id, pin_block, pan_blob, corr), seconds),
        "unwrap_per_s": _rate(lambda: wrap.unwrap_for_terminal(
            kex_priv, "T-BENCH", KeyUsage.PIN_ENC, tpk_blob), seconds),
        "platform_us_per_payment": 1e6 / _rate(platform_payment, seconds),
        "provider_us_per_payment": 1e6 / _rate(provider_payment, seconds),
    }
    out = {k: round(v, 1) for k, v in out.items()}
    out["event_bytes"] = len(data)
    out["machine"] = machine()
    out["signature"] = "Ed25519"
    out["note"] = "one thread; role facades with cached key objects, as the agents use them"
    return out
