"""``cardbus bench crypto`` runs and prints the figures the issue names (no timing asserts)."""

from __future__ import annotations

import json

import pytest

from console.cli import main

KEYS = {"arqc_verify_per_s", "sign_per_s", "verify_per_s", "pin_translate_per_s",
        "unwrap_per_s", "platform_us_per_payment", "provider_us_per_payment"}


def test_bench_crypto_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "crypto", "--json", "--seconds", "0.01"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result.keys() >= KEYS
    assert all(isinstance(result[k], float) and result[k] > 0 for k in KEYS)
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]


def test_bench_crypto_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "crypto", "--seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "cores" in out and "ARQC verify" in out and "µs" in out
