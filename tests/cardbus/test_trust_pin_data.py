"""Issue 22, finding 9: PIN verification data is sealed under a provider-only key with its own
usage and AEAD domain: the platform (which holds the provider's PAN key) cannot open it, and no
payment context or PAN blob can stand in for it."""

from __future__ import annotations

import pytest

from agents.providers.bank_a import adapter as bank_a
from agents.providers.base import card_issued_event
from bench.sim import World
from cardbus.crypto.hsm import split_versioned
from cardbus.crypto.keys import KeyUsage
from cardbus.crypto.pan import PanCipher
from cardbus.errors import KeyUsageError, MissingKeyError, UnwrapError
from tests.agents.conftest import NOW


@pytest.fixture
def world() -> World:
    return World.build([bank_a], ["T-0001"], NOW)


def test_the_platform_cannot_open_a_card_s_pvv(world: World) -> None:
    """The finding: the platform's key store opened a card's PVV from ``CardIssued``."""
    issued = world.issue("bank-a", pin="4321")
    event = card_issued_event(issued, world.providers["bank-a"], NOW)
    blob = event.pin_verification_encrypted
    key_id, version = split_versioned(blob.key_id)
    assert key_id == "pvd:bank-a"
    with pytest.raises(MissingKeyError):
        world.platform.keys.key(key_id, KeyUsage.PIN_DATA, version=version)
    # with the provider's PAN key the platform holds, in the old PVV context: no PVV
    pan_vid = f"pan:bank-a.v{world.platform.keys.latest_version('pan:bank-a')}"
    pan_key = world.platform.keys.key("pan:bank-a", KeyUsage.PAN_ENC)
    with pytest.raises(UnwrapError):
        PanCipher(pan_vid, pan_key).decrypt(blob, f"card-secret|{issued.card.pan_token}")


def test_the_pin_data_key_is_never_exported(world: World) -> None:
    hsm = world.providers["bank-a"]
    with pytest.raises(KeyUsageError):
        hsm.export_key_block(KeyUsage.PIN_DATA)


def test_a_sealed_pvv_opens_for_its_card_only(world: World) -> None:
    hsm = world.providers["bank-a"]
    one, two = world.issue("bank-a", pin="1111"), world.issue("bank-a", pin="2222")
    sealed = one.card.pin.sealed_value
    assert hsm._open_card_secret(sealed, one.card.pan_token).isdigit()
    with pytest.raises(UnwrapError):
        hsm._open_card_secret(sealed, two.card.pan_token)
    # a PAN blob (the PAN key's domain) is not PIN data, whatever its context says
    pan_blob = hsm._pan_cipher(f"pan:bank-a.v{hsm.keys.latest_version('pan:bank-a')}",
                               hsm.identity).encrypt("1234", one.card.pan_token)
    with pytest.raises(UnwrapError):
        hsm._open_card_secret(pan_blob, one.card.pan_token)
