"""``cardbus keys revoke`` against the real broker: the sealed revocation lands on the key
history, and the audit then reports every seal made with the key after it (and nothing else);
a party revoking another's key is refused before anything is published."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from audit.model import SEAL
from bench.trail import Trail
from console import exitcodes
from console.cli import main
from console.commands.revoke import owner_of
from tests.audit.kafka import publish_records
from tests.audit.test_broker import fresh_namespace
from tests.audit.test_key_history import _sealed_with

pytestmark = [pytest.mark.broker]


def test_owner_of_a_key() -> None:
    assert owner_of("tmk:T-0001.v2") == "terminal:T-0001"
    assert owner_of("sign:provider:bank-a.v1") == "provider:bank-a"
    assert owner_of("sign:platform.v3") == "platform"


def test_revoked_key_seals_after_the_revocation_are_findings(
        kafka_bootstrap: str, trail_home: tuple[Trail, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    trail, home = trail_home
    ns = fresh_namespace()
    asyncio.run(publish_records(kafka_bootstrap, ns, trail.records))
    sealed = _sealed_with(trail.records, "tmk:T-0001.v1")
    cut = sorted(r.timestamp_ms for r in sealed)[len(sealed) // 2]
    common = ["--namespace", ns, "--bootstrap", kafka_bootstrap, "--home", str(home)]

    assert main(["keys", "revoke", "sign:provider:bank-b.v1", "--reason", "not yours",
                 "--by", "provider:bank-a", *common]) == exitcodes.ERROR
    assert "may not revoke" in capsys.readouterr().err

    assert main(["keys", "revoke", "tmk:T-0001.v1", "--reason", "terminal stolen",
                 "--at", str(cut), *common]) == exitcodes.OK
    assert f"{ns}.key-history/" in capsys.readouterr().out

    code = main(["audit", "--as", "operator", "--json", "--workers", "1", *common])
    report = json.loads(capsys.readouterr().out)
    assert code == exitcodes.NO
    assert {(f["topic"], f["partition"], f["offset"]) for f in report["findings"]} == {
        (r.topic, r.partition, r.offset) for r in sealed if r.timestamp_ms >= cut}
    assert {f["kind"] for f in report["findings"]} == {SEAL}
    assert all("after its revocation" in f["reason"] for f in report["findings"])
