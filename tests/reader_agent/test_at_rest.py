"""Secrets at rest on the terminal's machine: the virtual cards' files and the parties' key
stores are 0600 files in 0700 folders."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cardbus import vault
from cardbus.crypto.hsm import ProviderHsm
from cards import applet_for
from cards.profile import CardState, cards_dir, load_profile, save_profile
from reader_agent.dialogue import AppletLink, Checkout, run_payment
from tests.reader_agent.conftest import aids, card_auth_public, issue


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_card_profile_and_state_are_private(tmp_path: Path, issuers: dict[str, ProviderHsm]
                                            ) -> None:
    home = tmp_path / "cards"
    home.mkdir(mode=0o755)
    home.chmod(0o755)  # as a umask of 022 leaves a new folder
    profile = issue("bank-a", issuers["bank-a"])
    path = save_profile(profile, home)
    assert _mode(home) == 0o700 and _mode(path) == 0o600
    assert load_profile(profile.card_id, home) == profile  # the clear PAN and keys, as issued
    run_payment(AppletLink(applet_for(profile, home)), aids(), Checkout(amount=100),
                lambda _p: card_auth_public(issuers["bank-a"]))  # the ATC is written
    state = home / f"{profile.card_id}.state.json"
    assert _mode(state) == 0o600 and CardState.for_profile(profile, home)["atc"] == 1
    assert sorted(p.name for p in home.iterdir()) == sorted([path.name, state.name])  # no .tmp


def test_default_cards_folder_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("CARDBUS_HOME", str(tmp_path / "state"))
    assert cards_dir() == tmp_path / "state" / "cards" and _mode(cards_dir()) == 0o700


def test_party_key_store_folder_is_private(tmp_path: Path) -> None:
    assert vault.create("terminal-T-REST", tmp_path)
    folder = vault.party_dir("terminal-T-REST", tmp_path)
    store = vault.FileKeyStore("terminal-T-REST", tmp_path)
    store.save()
    assert _mode(folder) == 0o700
    assert _mode(folder / "storage-key.json") == 0o600 and _mode(store.path) == 0o600
