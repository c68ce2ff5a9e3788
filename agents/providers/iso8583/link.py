"""The ISO 8583 link to the bank's host, as a production switch keeps it.

One persistent TCP connection (2-byte length prefix). At connect: sign-on (0800, DE 70 001);
while idle: an echo (0800, 301) on a timer, whose failure drops the connection. Many requests
are in flight at once; an answer finds its request by STAN and terminal id (DE 11 + DE 41).
Each request has a deadline: no answer in time raises ``IsoLinkError`` (the bridge answers 91)
and reverses it at the host: a 0400, then 0401 repeats (same STAN) until a 0410 comes back, over
reconnects. A late approval (an 0110 with 00 for a request already given up) is reversed too.
The connection is re-made with exponential backoff whenever it drops. Frames that do not decode
or match nothing are handed to ``on_bad_frame`` (the app dead-letters them, PAN and PIN block
masked) and the link carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.providers.iso8583 import fields, messages
from agents.providers.iso8583.fields import Doc
from cardbus.errors import CardBusError, DecodeError, IsoLinkError
from cardbus.logs import get_logger

log = get_logger("iso8583.link")

BadFrame = Callable[[bytes, str], None]
Clock = Callable[[], datetime]
KEPT_EXPIRED = 10_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ignore(_raw: bytes, _reason: str) -> None:
    return None


@dataclass
class LinkSettings:
    """How the link behaves (seconds)."""

    host: str = "127.0.0.1"
    port: int = 8583
    deadline: float = 2.0
    echo_every: float = 30.0
    repeat_every: float = 1.0  # a reversal's 0401 repeat interval
    backoff_first: float = 0.1
    backoff_max: float = 5.0


@dataclass
class LinkStats:
    """Counters (for logs, tests and the benchmark)."""

    sent: int = 0
    answered: int = 0
    timed_out: int = 0
    reversals_sent: int = 0
    reversals_done: int = 0
    late_approvals: int = 0
    bad_frames: int = 0
    unmatched: int = 0
    connects: int = 0


@dataclass
class _Reversal:
    original: Doc
    stan: str
    done: asyncio.Future[Doc]
    attempts: int = 0
    waiters: list[Any] = field(default_factory=list)


class Link:
    """One persistent ISO 8583 connection to a host."""

    def __init__(self, settings: LinkSettings, *, on_bad_frame: BadFrame = _ignore,
                 clock: Clock = _utcnow) -> None:
        self.s = settings
        self.stats = LinkStats()
        self._on_bad_frame = on_bad_frame
        self._clock = clock
        # a restarted link must not reuse the STANs it sent in the same second (the host takes
        # a repeated STAN + DE 7 + DE 41 for a retransmission): start anywhere
        self._stan = itertools.count(1 + secrets.randbelow(999_000))
        self._pending: dict[tuple[str, str], asyncio.Future[Doc]] = {}
        self._written: set[tuple[str, str]] = set()  # 0100s on the wire, not yet answered
        self._expired: OrderedDict[tuple[str, str], Doc] = OrderedDict()
        self._reversals: OrderedDict[tuple[str, str], _Reversal] = OrderedDict()
        self._writer: asyncio.StreamWriter | None = None
        self._up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._last_traffic = 0.0

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, wait: float | None = 10.0) -> None:
        """Connect and sign on (in the background, retried); wait up to ``wait`` for it."""
        self._running = True
        self._tasks.append(asyncio.create_task(self._keep_connected(), name="iso-connect"))
        if wait:
            try:
                await asyncio.wait_for(self._up.wait(), wait)
            except TimeoutError:
                raise IsoLinkError(f"no sign-on with the host at {self.s.host}:{self.s.port} "
                                   f"within {wait:.0f}s") from None

    async def stop(self) -> None:
        """Sign off (best effort) and close."""
        if self._up.is_set():
            with contextlib.suppress(CardBusError, TimeoutError, OSError):
                await asyncio.wait_for(self.request(messages.network(
                    messages.SIGN_OFF, stan=self.next_stan(), sent_at=self._clock())), 1.0)
        self._running = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._close()

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def next_stan(self) -> str:
        """The next STAN (1..999999, wrapping; never one still in flight)."""
        while True:
            stan = f"{next(self._stan) % 1_000_000 or 1:06d}"
            if not any(k[0] == stan for k in self._pending):
                return stan

    # -- requests --------------------------------------------------------------------------

    async def request(self, doc: Doc, deadline: float | None = None) -> Doc:
        """Send ``doc`` (STAN set) and wait for its answer; ``IsoLinkError`` at the deadline
        (no reversal: use ``authorize`` for what must be reversed)."""
        key = messages.matching_key(doc)
        fut: asyncio.Future[Doc] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            async with asyncio.timeout(deadline or self.s.deadline):
                await self._up.wait()
                await self._send(doc)
                return await fut
        except TimeoutError:
            raise IsoLinkError(f"no answer to {doc['t']} STAN {doc['11']} in time") from None
        finally:
            self._pending.pop(key, None)

    async def authorize(self, doc: Doc) -> Doc:
        """Send a 0100 and wait for its 0110. No answer by the deadline: reverse it at the
        host (0400, then 0401 until answered) and raise ``IsoLinkError``."""
        self.stats.sent += 1
        key = messages.matching_key(doc)
        try:
            answer = await self.request(doc)
        except IsoLinkError:
            self.stats.timed_out += 1
            if key in self._written:  # it may have reached the host: undo it there
                self._remember_expired(doc)
                self.reverse(doc, reason="timeout")
            raise
        finally:
            self._written.discard(key)
        self.stats.answered += 1
        return answer

    def reverse(self, original: Doc, *, reason: str) -> asyncio.Future[Doc]:
        """Reverse the 0100 ``original`` at the host (once, however often asked); a future
        of the 0410."""
        key = messages.matching_key(original)
        job = self._reversals.get(key)
        if job is None or (job.done.done() and reason == "late_approval"):
            job = _Reversal(original, self.next_stan(),
                            asyncio.get_running_loop().create_future())
            self._reversals[key] = job
            self._reversals.move_to_end(key)
            while len(self._reversals) > KEPT_EXPIRED:  # forget the oldest answered ones
                oldest = next(iter(self._reversals))
                if not self._reversals[oldest].done.done():
                    break
                del self._reversals[oldest]
            log.info("reversal queued", reason=reason, stan=original["11"])
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(asyncio.create_task(self._run_reversal(job),
                                                   name=f"iso-reversal-{job.stan}"))
        return job.done

    async def _run_reversal(self, job: _Reversal) -> None:
        while self._running and not job.done.done():
            doc = messages.reversal(job.original, stan=job.stan, repeat=job.attempts > 0)
            job.attempts += 1
            self.stats.reversals_sent += 1
            try:
                answer = await self.request(doc, deadline=self.s.repeat_every)
            except IsoLinkError:
                continue  # repeat as 0401 (over a new connection if need be)
            if answer.get("t") == messages.REVERSAL_ANSWER:
                self.stats.reversals_done += 1
                log.info("reversal answered", code=answer.get("39"), attempts=job.attempts)
                job.done.set_result(answer)

    def _remember_expired(self, doc: Doc) -> None:
        self._expired[messages.matching_key(doc)] = doc
        while len(self._expired) > KEPT_EXPIRED:
            self._expired.popitem(last=False)

    # -- the connection ----------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        backoff = self.s.backoff_first
        while self._running:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.s.host, self.s.port), self.s.deadline)
            except (OSError, TimeoutError) as exc:
                log.warning("host not reachable", host=self.s.host, port=self.s.port,
                            error=type(exc).__name__, retry_in=round(backoff, 2))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.s.backoff_max)
                continue
            self._writer = writer
            self.stats.connects += 1
            reading = asyncio.create_task(self._read(reader), name="iso-read")
            try:
                await self._sign_on()
                backoff = self.s.backoff_first
                self._up.set()
                log.info("signed on", host=self.s.host, port=self.s.port)
                await self._echo_until_closed(reading)
            except (CardBusError, OSError) as exc:
                log.warning("link dropped", error=str(exc) or type(exc).__name__)
            finally:
                self._up.clear()
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
                self._close()
            if self._running:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.s.backoff_max)

    async def _sign_on(self) -> None:
        doc = messages.network(messages.SIGN_ON, stan=self.next_stan(), sent_at=self._clock())
        key = messages.matching_key(doc)
        fut: asyncio.Future[Doc] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            await self._send(doc)
            answer = await asyncio.wait_for(fut, self.s.deadline)
        except TimeoutError:
            raise IsoLinkError("no answer to sign-on") from None
        finally:
            self._pending.pop(key, None)
        if answer.get("39") != "00":
            raise IsoLinkError(f"sign-on refused: {answer.get('39')}")

    async def _echo_until_closed(self, reading: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        while not reading.done():
            await asyncio.wait([reading], timeout=self.s.echo_every)
            if reading.done():
                raise IsoLinkError("connection closed by the host")
            if loop.time() - self._last_traffic >= self.s.echo_every:
                await self.request(messages.network(messages.ECHO, stan=self.next_stan(),
                                                    sent_at=self._clock()))

    async def _send(self, doc: Doc) -> None:
        writer = self._writer
        if writer is None:
            raise IsoLinkError("not connected")
        writer.write(fields.frame(fields.encode(doc)))
        if doc.get("t") == messages.AUTH:
            self._written.add(messages.matching_key(doc))
        self._last_traffic = asyncio.get_running_loop().time()
        try:
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            raise IsoLinkError(f"send failed: {exc}") from None

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                (size,) = struct.unpack(">H", await reader.readexactly(2))
                raw = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return
            self._last_traffic = asyncio.get_running_loop().time()
            try:
                doc = fields.decode(raw)
            except DecodeError as exc:
                self._bad(raw, exc.reason)
                continue
            self._deliver(raw, doc)

    def _deliver(self, raw: bytes, doc: Doc) -> None:
        key = messages.matching_key(doc)
        fut = self._pending.get(key)
        if fut is not None and not fut.done():
            fut.set_result(doc)
            return
        original = self._expired.get(key)
        if original is not None and doc.get("t") == messages.AUTH_ANSWER:
            if doc.get("39") == "00":
                self.stats.late_approvals += 1
                log.warning("late approval: reversing it", stan=key[0])
                self.reverse(original, reason="late_approval")
            return
        self.stats.unmatched += 1
        self._bad(raw, f"answer {doc.get('t')} STAN {key[0]} matches no request")

    def _bad(self, raw: bytes, reason: str) -> None:
        self.stats.bad_frames += 1
        log.warning("bad frame from the host", reason=reason, size=len(raw))
        try:
            self._on_bad_frame(raw, reason)
        except Exception:  # a callback's failure must not stop the link
            log.exception("bad-frame handler failed")
