"""How a test's own raw aiokafka clients connect: as the cluster's operator (a super user), over
TLS + SCRAM on the secured test bus, plaintext on an ``--insecure`` one (``streams.security``)."""

from __future__ import annotations

from typing import Any

from streams.security import client_security


def operator(bootstrap: str) -> dict[str, Any]:
    """aiokafka keyword arguments of the operator for the cluster at ``bootstrap``."""
    return client_security("operator", bootstrap).aiokafka()
