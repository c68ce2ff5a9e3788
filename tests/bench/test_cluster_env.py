"""A bench child gets its own state folder; it must still find the local cluster (its mode,
CA and the operator's vault). Found missing: `cardbus bench pipeline` against a broker started
with its own CARDBUS_HOME failed in every child with "operator has no secret"."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.procs import cluster_env
from cardbus.errors import MissingKeyError
from streams import broker
from streams.security import client_security


@pytest.mark.broker
def test_a_child_with_its_own_home_finds_the_cluster_through_cluster_env(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = broker.Cluster.load(broker.default_home())
    if cluster is None or cluster.insecure:
        pytest.skip("the session's broker is not a local secured cluster")
    # the parent: the cluster's record under its state folder, no CARDBUS_KAFKA_CLUSTER
    state = tmp_path / "state"
    (state / "kafka").mkdir(parents=True)
    (state / "kafka" / "cluster").symlink_to(cluster.home)
    monkeypatch.delenv("CARDBUS_KAFKA_CLUSTER", raising=False)
    monkeypatch.setenv("CARDBUS_HOME", str(state))
    env = cluster_env(cluster.bootstrap)
    assert env == {"CARDBUS_KAFKA_CLUSTER": str(cluster.home)}

    # the child: a fresh state folder of its own
    monkeypatch.setenv("CARDBUS_HOME", str(tmp_path / "child"))
    with pytest.raises(MissingKeyError):  # what every child hit before
        client_security("operator", cluster.bootstrap)
    monkeypatch.setenv("CARDBUS_KAFKA_CLUSTER", env["CARDBUS_KAFKA_CLUSTER"])
    sec = client_security("operator", cluster.bootstrap)
    assert sec.secured and sec.password and sec.ca is not None


def test_no_cluster_env_for_a_cluster_that_is_not_local(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARDBUS_KAFKA_CLUSTER", raising=False)
    monkeypatch.setenv("CARDBUS_HOME", str(tmp_path))
    assert cluster_env("kafka.example.net:9093") == {}
