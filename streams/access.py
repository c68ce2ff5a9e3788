"""Turning the cluster's refusals into one clear ``BusAccessError`` naming principal and permission.

aiokafka reports a refusal in several shapes: a ``TopicAuthorizationFailedError`` from a send, a
``ClusterAuthorizationFailedError`` when an idempotent producer of a party that may write no
topic asks for its producer id, a ``GroupAuthorizationFailedError`` on a commit, a silent
consumer (an assigned partition it may not read is never fetched: only its metadata says
"unauthorized"), and a bare ``KafkaConnectionError("Unable to bootstrap ...")`` when SCRAM or
TLS fail (the cause is only logged). ``refusal`` maps the first three, ``check_readable`` makes
the fourth loud, ``diagnose_connect`` opens one connection itself to learn the fifth's cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from cardbus.errors import BusAccessError, BusAuthenticationError, BusAuthorizationError
from streams.security import ClientSecurity, settle_tls_closes

HINT = "no ACL grants it (`cardbus topics list --acls` shows who may do what)"


def denied(sec: ClientSecurity, operation: str, resource: str) -> BusAuthorizationError:
    """The error for ``sec``'s principal lacking ``operation`` on ``resource``."""
    return BusAuthorizationError(f"bus: {sec.principal} may not {operation} {resource}: {HINT}",
                                 principal=sec.principal, operation=operation,
                                 resource=resource)


def refusal(exc: BaseException, sec: ClientSecurity, *, operation: str,
            resource: str) -> BusAccessError | None:
    """The ``BusAccessError`` an aiokafka error means, or ``None`` if it is no refusal.
    ``operation``/``resource``: what the caller was doing (``WRITE``, ``topic cardbus.taps``)."""
    if isinstance(exc, BusAccessError):
        return exc
    if isinstance(exc, TopicAuthorizationFailedError):
        topic = str(exc.args[0]) if exc.args else resource
        return denied(sec, operation, topic if topic.startswith("topic ") else f"topic {topic}")
    if isinstance(exc, GroupAuthorizationFailedError):
        group = str(exc.args[0]).rsplit(": ", 1)[-1] if exc.args else "?"
        return denied(sec, "READ (join, commit)", f"group {group}")
    if isinstance(exc, ClusterAuthorizationFailedError):  # an idempotent producer's id
        return denied(sec, operation, resource)
    if isinstance(exc, TransactionalIdAuthorizationFailed):
        return denied(sec, "WRITE", "its transactional id")
    if isinstance(exc, SaslAuthenticationFailed):
        return _bad_credentials(sec)
    return None


def _bad_credentials(sec: ClientSecurity) -> BusAuthenticationError:
    return BusAuthenticationError(
        f"bus: {sec.principal} was refused: wrong password or unknown user (SCRAM-SHA-512); "
        f"if it was rotated, restart this process; `cardbus credentials ensure` recreates it",
        principal=sec.principal, operation="authenticate")


@contextlib.asynccontextmanager
async def guarded(sec: ClientSecurity, bootstrap: str, *, operation: str,
                  resource: str) -> AsyncIterator[None]:
    """Run a block of client calls; a refusal leaves it as a ``BusAccessError``, a failed
    bootstrap as its diagnosed cause (other errors pass unchanged)."""
    try:
        yield
    except KafkaConnectionError as exc:
        found = await diagnose_connect(bootstrap, sec)
        await settle_tls_closes()
        if found is not None:
            raise found from None
        raise exc
    except KafkaError as exc:
        mapped = refusal(exc, sec, operation=operation, resource=resource)
        if mapped is not None:
            raise mapped from None
        raise


async def check_readable(consumer: Any, topics: Iterable[str], sec: ClientSecurity) -> None:
    """Raise ``BusAuthorizationError`` if ``consumer`` (assigned ``topics``) may not read one:
    aiokafka itself would only never fetch it."""
    await consumer._client.force_metadata_update()  # aiokafka keeps no public accessor
    refused = sorted(set(topics) & set(consumer._client.cluster.unauthorized_topics))
    if refused:
        raise denied(sec, "READ", f"topic {', '.join(refused)}")


async def diagnose_connect(bootstrap: str, sec: ClientSecurity,
                           timeout: float = 10.0) -> BusAccessError | None:
    """Open one connection to the first bootstrap server as ``sec`` would; the
    ``BusAccessError`` that explains a refused connection, or ``None`` (down, or fine)."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        settings = sec.aiokafka()
        conn = await asyncio.wait_for(create_conn(host, int(port), **settings), timeout)
    except SaslAuthenticationFailed:
        return _bad_credentials(sec)
    except (KafkaError, OSError, TimeoutError, ssl.SSLError):
        if not sec.secured and await _speaks_tls(host, int(port), timeout):
            return BusAuthenticationError(
                f"bus: the cluster at {bootstrap} takes TLS (SASL_SSL) clients only and this "
                "client connects without TLS (CARDBUS_KAFKA_SECURITY=plaintext, or a broker "
                "state that says --insecure)", principal=sec.principal, operation="connect")
        return None
    conn.close()
    return None


async def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only asking whether the port speaks TLS at all
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return True
