"""Card-management and lost-card events: what they admit, and the v1 decisions and payment
outcomes recorded before issuer scripts (their seals still verify over the v1 bytes)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from audit.scan import canonical
from cardbus.crypto.signing import Signer
from cardbus.errors import SignatureInvalid
from schemas.base import canonical_bytes, compact_sorted_json
from schemas.cardmgmt import CardOperation
from schemas.samples import sample_event, sample_raw
from streams.codec import decode_raw
from streams.topics import PROVIDER_RESULTS, TERMINAL_RESULTS


@pytest.mark.parametrize("fields", [
    {"action": "install"},  # install names an app
    {"action": "install", "app": "transit", "aid": "A000000632010105"},
    {"action": "lock"},  # lock names an aid
    {"action": "delete", "app": "transit"},
    {"action": "list", "aid": "A000000632010105"},
    {"action": "install", "app": "Transit!"},
])
def test_an_operation_names_exactly_what_it_acts_on(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        CardOperation.model_validate(fields)


def test_a_purse_travels_only_as_card_perso_key_blocks() -> None:
    raw = sample_raw("PursePersonalisationPrepared")
    raw["load_key"]["usage"] = "transit_load"  # an operator's master key: never
    with pytest.raises(ValidationError, match="card_perso"):
        sample_event("PursePersonalisationPrepared", load_key=raw["load_key"])


def test_an_issuer_script_goes_only_with_an_arpc() -> None:
    script = {"kind": "block", "command": "hB4AAAgAAAAAAAAAAA=="}
    assert sample_event("AuthorizationDecided", issuer_script=script)
    with pytest.raises(ValidationError, match="issuer_script"):
        sample_event("AuthorizationDecided", issuer_script=script, arpc=None)


@pytest.mark.parametrize(("name", "topic"), [("AuthorizationDecided", PROVIDER_RESULTS.name),
                                             ("PaymentCompleted", TERMINAL_RESULTS.name)])
def test_v1_answers_upcast_and_their_seals_still_verify(name: str, topic: str) -> None:
    raw = sample_raw(name, sealed=False)
    raw["schema_version"] = 1  # as recorded before issuer scripts (no such field)
    signer = Signer.generate("sign:platform.v1")
    raw["seal"] = signer.seal(compact_sorted_json(raw)).model_dump()
    event, original = decode_raw(topic, json.dumps(raw).encode())
    assert event.schema_version == 2 and event.issuer_script is None  # type: ignore[attr-defined]
    assert event.seal is not None
    signer.verifier.verify_seal(event.seal, canonical(event, original))  # the v1 bytes
    with pytest.raises(SignatureInvalid):  # (not the v2 form, which has one more field)
        signer.verifier.verify_seal(event.seal, canonical_bytes(event))
