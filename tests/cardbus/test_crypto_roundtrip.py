"""A full crypto round trip (provisioning, enrollment, payment, top-up), then a scan of every
captured log line and every serialized event, blob, key block and key record for clear keys,
the PIN or the PAN, in hex, base64 and decimal forms."""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import UTC, date, datetime
from typing import Literal

import structlog
from structlog.testing import capture_logs

from cardbus.crypto import card_auth, emv, transit
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm, TerminalHsm
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.keystore import KeyStore
from cardbus.crypto.signing import verify_event
from cardbus.logs import redact
from schemas.base import EncryptedBlob, Event, Hex, Money, PanToken, mask_pan

World = tuple[PlatformHsm, ProviderHsm, TerminalHsm]
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PIN = "2580"


class TestPaymentRequested(Event):
    """The terminal's request (shape only; the real schema lives in schemas/)."""

    __test__ = False
    type: Literal["TestPaymentRequested"] = "TestPaymentRequested"
    schema_version: Literal[1] = 1
    amount: Money
    pan: EncryptedBlob
    masked_pan: str
    pin_key_id: str
    pin_block: Hex
    atc: int
    cdol1: Hex
    arqc: Hex


class TestProviderRequested(Event):
    """What the platform routes to the provider."""

    __test__ = False
    type: Literal["TestProviderRequested"] = "TestProviderRequested"
    schema_version: Literal[1] = 1
    pan: EncryptedBlob
    pan_token: PanToken
    pin_key_id: str
    pin_block: Hex
    atc: int
    cdol1: Hex
    arqc: Hex


class TestDecided(Event):
    """The provider's answer."""

    __test__ = False
    type: Literal["TestDecided"] = "TestDecided"
    schema_version: Literal[1] = 1
    response_code: str
    arpc: Hex


def _forms(secret: bytes) -> set[str]:
    """The textual forms a leaked secret would take."""
    forms = {secret.hex(), secret.hex().upper(),
             base64.b64encode(secret).decode().rstrip("="),
             base64.urlsafe_b64encode(secret).decode().rstrip("=")}
    if len(secret) >= 8:
        forms.add(str(int.from_bytes(secret, "big")))
    return {f for f in forms if len(f) >= 8}


def find_leaks(texts: list[str], keys: list[bytes], pan: str, pin_value: str) -> list[str]:
    """Every (kind, form) of a secret that appears in ``texts``."""
    blob = "\n".join(texts)
    lower = blob.lower()  # hex in either case
    found = []
    for i, key in enumerate(keys):
        found += [f"key#{i}:{f[:6]}..." for f in _forms(key) if f in blob or (f.lower() in lower
                  and all(c in "0123456789abcdef" for c in f.lower()))]
    pan_forms = {pan, pan.encode().hex(), pan.encode().hex().upper(),
                 base64.b64encode(pan.encode()).decode().rstrip("="),
                 base64.urlsafe_b64encode(pan.encode()).decode().rstrip("=")}
    found += ["pan" for f in pan_forms if f in blob]
    # the PIN as a value of its own (decimal), or as a clear ISO 9564 format 4 PIN field (hex)
    if re.search(rf"(?<![0-9A-Za-z+/_-]){pin_value}(?![0-9A-Za-z+/_-])", blob):
        found.append("pin")
    field = f"4{len(pin_value):X}{pin_value}".ljust(16, "A")
    if field in blob.upper():
        found.append("pin field")
    return found


def all_keys(*stores: KeyStore) -> list[bytes]:
    """Every clear key in the stores (test-only access)."""
    return [s.key(r.key_id, r.usage, version=r.version) for s in stores for r in s.records()]


def run_round_trip(world: World, pan: str) -> tuple[list[str], list[bytes]]:
    """Provisioning, enrollment, a payment and a transit load; returns logs, serialized
    artefacts, and the clear card secrets the scan must also look for."""
    plat, prov, term = world
    log = structlog.get_logger("roundtrip")
    out: list[str] = []
    corr = "pay-0001"
    card = prov.issue_card(pan, PIN, "3012")
    out.append(card.certificate.model_dump_json())
    out.append(repr(card))
    # provisioning again (a rotation of the provider's keys travels the same way)
    for usage in (KeyUsage.PIN_ENC, KeyUsage.PAN_ENC):
        block = prov.export_key_block(usage)
        rec = plat.accept_key_block("bank-a", usage, block)
        log.info("key.provisioned", provider="bank-a", key_id=rec.key_id, kcv=rec.kcv,
                 key_block=block)
        out.append(block)
    # enrollment of a second terminal, the wrapped keys as they travel
    t2 = TerminalHsm("T-2", KeyStore(term.keys._keyring))
    for blob in plat.enroll_terminal("T-2", t2.public_kex()):
        t2.install(blob)
        out.append(blob.model_dump_json())
        log.info("terminal.key.delivered", terminal_id="T-2", key_id=blob.key_id)
    # the tap: card authentication and the ARQC
    un, atc = os.urandom(4), 21
    sig = card_auth.card_sign(card.card_private_key, un, atc)
    term.verify_card(card.certificate, un, atc, sig, today=date(2026, 1, 2), pan=pan)
    cdol1 = emv.arqc_data(amount=1250, currency_code=156, country_code=156, date="260102",
                          unpredictable_number=un, atc=atc)
    arqc = emv.generate_arqc(emv.derive_session_key(card.icc_master_key, atc), cdol1)
    kid, block = term.pin_block(PIN, pan)
    req = term.mac_event(TestPaymentRequested(
        event_id="evt-request", correlation_id=corr, occurred_at=WHEN,
        producer="terminal:T-1", amount=Money(amount=1250, currency="CNY"),
        pan=term.encrypt_pan(pan, corr), masked_pan=mask_pan(pan), pin_key_id=kid,
        pin_block=block.hex().upper(), atc=atc, cdol1=cdol1.hex().upper(),
        arqc=arqc.hex().upper()))
    log.info(f"card {pan} tapped", masked_pan=req.masked_pan, pin=PIN, pin_block=block.hex())
    out.append(req.model_dump_json())
    # the platform
    plat.verify_terminal_mac("T-1", req)
    pkid, pblock = plat.translate_pin("T-1", "bank-a", req.pin_key_id,
                                      bytes.fromhex(req.pin_block), req.pan, corr)
    routed = plat.sign_event(TestProviderRequested(
        event_id="evt-routed", correlation_id=corr, occurred_at=WHEN, producer="platform",
        pan=plat.reencrypt_pan("T-1", "bank-a", req.pan, corr),
        pan_token=plat.pan_token("T-1", req.pan, corr), pin_key_id=pkid,
        pin_block=pblock.hex().upper(), atc=atc, cdol1=req.cdol1, arqc=req.arqc))
    log.info("payment.routed", provider="bank-a", bin=plat.bin_of("T-1", req.pan, corr),
             routed=routed.model_dump(mode="json"))
    out.append(routed.model_dump_json())
    # the provider
    verify_event(routed, {plat.verifier.key_id: plat.verifier}.get)
    assert prov.verify_pin(routed.pin_key_id, bytes.fromhex(routed.pin_block), routed.pan, corr,
                           card.pvv)
    arpc = prov.authorize_cryptogram(routed.pan, corr, "00", atc, bytes.fromhex(routed.cdol1),
                                     bytes.fromhex(routed.arqc), b"00", last_atc=20)
    decided = prov.sign_event(TestDecided(event_id="evt-decided", correlation_id=corr,
                                          occurred_at=WHEN, producer="provider:bank-a",
                                          response_code="00", arpc=arpc.hex().upper()))
    log.info("payment.decided", response_code="00", card=prov.pan_token(routed.pan, corr))
    out.append(decided.model_dump_json())
    verify_event(decided, {prov.verifier.key_id: prov.verifier}.get)
    emv.verify_arpc_method1(emv.derive_session_key(card.icc_master_key, atc),
                            arqc, b"00", arpc)
    # a transit load
    card_no = "1000000055550001"
    dlk, dtk = prov.transit_card_keys(card_no)
    rnd, when = os.urandom(4), "20260102030405"
    mac1 = transit.card_load_mac1(dlk, rnd, 3, 100, 5000, "T-1")
    mac2 = prov.authorize_load(card_no, rnd, 3, 100, 5000, "T-1", when, mac1)
    transit.verify_operator_mac2(dlk, rnd, 3, 5000, "T-1", when, mac2)
    tac = transit.card_tac(dtk, 5100, 3, 5000, "T-1", when)
    prov.verify_load_tac(card_no, 5100, 3, 5000, "T-1", when, tac)
    log.info("transit.loaded", mac1=mac1.hex(), mac2=mac2.hex(), tac=tac.hex())
    # key records at rest
    for store in (plat.keys, prov.keys, term.keys, t2.keys):
        out += [r.model_dump_json() for r in store.records()]
    card_secrets = [card.icc_master_key, card.card_private_key, dlk, dtk,
                    emv.derive_session_key(card.icc_master_key, atc)]
    return out, card_secrets


def test_round_trip_leaks_nothing(world: World, pan: str) -> None:
    with capture_logs(processors=[redact]) as logs:
        artefacts, card_secrets = run_round_trip(world, pan)
    plat, prov, term = world
    assert len(logs) >= 8
    texts = [json.dumps(entry, default=str) for entry in logs] + artefacts
    keys = all_keys(plat.keys, prov.keys, term.keys) + card_secrets
    assert len(keys) > 20
    assert find_leaks(texts, keys, pan, PIN) == []
    # the logs still say what happened: masked PAN, key ids and KCVs are there
    joined = "\n".join(texts)
    assert mask_pan(pan) in joined and "pin:bank-a" in joined


def test_scanner_finds_planted_leaks(world: World, pan: str) -> None:
    """The scan can fail: each planted form of a secret is found."""
    plat, _, _ = world
    key = all_keys(plat.keys)[0]
    assert find_leaks([f"x {key.hex()} y"], [key], pan, PIN)
    assert find_leaks([base64.b64encode(key).decode()], [key], pan, PIN)
    assert find_leaks([str(int.from_bytes(key, "big"))], [key], pan, PIN)
    assert find_leaks([json.dumps({"pan": pan})], [], pan, PIN) == ["pan"]
    assert find_leaks([pan.encode().hex()], [], pan, PIN) == ["pan"]
    assert find_leaks([json.dumps({"p": PIN})], [], pan, PIN) == ["pin"]
    assert find_leaks([f"44{PIN}AAAAAAAAAA"], [], pan, PIN) == ["pin field"]
    assert find_leaks(["evt-request 2026-01-02"], [key], pan, PIN) == []
