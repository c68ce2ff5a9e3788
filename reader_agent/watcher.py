"""Watch every PC/SC reader for card arrivals and removals, surviving pcscd restarts.

One thread blocks in ``SCardGetStatusChange`` over all readers (plus a 250 ms timeout to pick
up new readers); on a card arrival it calls ``on_card(reader, atr, detected_at)`` with
``time.monotonic()`` of the detection. When pcscd goes away the context is dropped and
re-established with back-off; every reader's state is forgotten (a restart drops cards).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from smartcard import scard

from cardbus.errors import CardBusError, PcscError
from cardbus.logs import get_logger
from reader_agent.pcsc import Context

log = get_logger("reader_agent.watcher")

OnCard = Callable[[str, bytes, float], None]


class ReaderWatcher:
    """A daemon thread reporting card arrivals (``on_card``) and removals (``on_removed``)."""

    def __init__(self, on_card: OnCard, on_removed: Callable[[str], None] | None = None,
                 readers: Callable[[str], bool] | None = None) -> None:
        self.on_card = on_card
        self.on_removed = on_removed or (lambda _r: None)
        self.accept = readers or (lambda _r: True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader-watcher", daemon=True)
        self.restarts = 0
        self.ctx: Context | None = None

    def start(self) -> ReaderWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.ctx is not None:
            with contextlib.suppress(Exception):
                self.ctx.cancel()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self.ctx = Context()
                backoff = 0.2
                self._watch(self.ctx)
            except PcscError as exc:
                log.warning("PC/SC unavailable, will reconnect", error=str(exc))
                self.restarts += 1
            except CardBusError as exc:  # anything else from PC/SC: start over, never die
                log.error("reader watch failed, restarting it", error=str(exc))
                self.restarts += 1
            finally:
                if self.ctx is not None:
                    with contextlib.suppress(Exception):
                        self.ctx.release()
                    self.ctx = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _watch(self, ctx: Context) -> None:
        states: dict[str, int] = {}
        while not self._stop.is_set():
            names = [r for r in ctx.readers() if self.accept(r)]
            for gone in set(states) - set(names):
                del states[gone]
            for name in names:
                states.setdefault(name, scard.SCARD_STATE_UNAWARE)
            if not states:
                time.sleep(0.25)
                continue
            changes = ctx.wait(list(states.items()), 250)
            now = time.monotonic()
            for name, event, atr in changes:
                before = states.get(name, 0)
                states[name] = event & ~scard.SCARD_STATE_CHANGED
                was = bool(before & scard.SCARD_STATE_PRESENT)
                is_ = bool(event & scard.SCARD_STATE_PRESENT) and \
                    not event & scard.SCARD_STATE_MUTE
                if is_ and not was:
                    self.on_card(name, bytes(atr), now)
                elif was and not is_:
                    self.on_removed(name)
