"""The host's card file (sealed, what the Java host reads) and how the bridge finds its host."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agents.providers.iso8583 import cardfile
from agents.providers.iso8583.app import host_address
from cardbus.errors import ConfigError


def test_card_file_is_sealed_and_round_trips(tmp_path: Path) -> None:
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    path = cardfile.card_file_path(tmp_path)
    card = cardfile.HostCard(pan="3569990000000004", expiry="3012", balance=500, pvv="1234")
    cardfile.enrol(path, aead, card)
    cardfile.set_flags(path, aead, card.pan, status="lost", delay_ms=250)
    assert cardfile.read_cards(path, aead) == {card.pan: cardfile.HostCard(
        pan=card.pan, expiry="3012", balance=500, pvv="1234", status="lost", delay_ms=250)}
    text = path.read_text()
    assert card.pan not in text and "expiry" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert card.pan not in repr(list(cardfile.read_cards(path, aead).values()))
    other = AESGCM(AESGCM.generate_key(bit_length=256))
    with pytest.raises(ConfigError):
        cardfile.read_cards(path, other)
    with pytest.raises(ConfigError):
        cardfile.set_flags(path, aead, "3569990000000012", drop=True)


def test_bridge_finds_its_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARDBUS_ISO_HOST", raising=False)
    with pytest.raises(ConfigError):
        host_address(tmp_path)
    (tmp_path / "iso-host").mkdir()
    (tmp_path / "iso-host" / "host.json").write_text(json.dumps({"pid": os.getpid(),
                                                                "port": 38583, "log": "x"}))
    assert host_address(tmp_path) == ("127.0.0.1", 38583)
    monkeypatch.setenv("CARDBUS_ISO_HOST", "10.1.2.3:9000")
    assert host_address(tmp_path) == ("10.1.2.3", 9000)
    monkeypatch.setenv("CARDBUS_ISO_HOST", "nonsense")
    with pytest.raises(ConfigError):
        host_address(tmp_path)


def test_a_card_issued_from_an_in_memory_key_store_touches_no_card_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test or benchmark issuing a bank-iso card with throwaway keys must not write the state
    folder's host card file (it would seal it under a key no host has, and the next run would
    find a file it cannot open)."""
    from agents.providers.iso8583.adapter import adapter
    from cardbus.crypto.hsm import ProviderHsm
    from cardbus.crypto.keystore import memory_keystore

    monkeypatch.setenv("CARDBUS_HOME", str(tmp_path))
    for _ in range(2):  # twice, each under new keys, as two benchmark runs
        issued = adapter.issue_card(ProviderHsm("bank-iso", memory_keystore()), pin="1234",
                                    opening_balance=100)
        assert issued.profile.pan.startswith("356999")
    assert not cardfile.card_file_path(tmp_path).exists()
