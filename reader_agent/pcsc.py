"""A thin PC/SC layer over pyscard's ``smartcard.scard``: one context, connect, transmit.

Every call blocks; the reader agent runs them in threads. pyscard failures become
``CardError`` (card gone, card mute) or ``PcscError`` (pcscd gone).

A card is never followed without bound: each card step (``CardLink.begin``: the payment
dialogue, the ARPC step, a purse read...) has a deadline and a byte budget, and one command
follows at most ``CardLimits.get_response_rounds`` GET RESPONSE (61xx) and
``CardLimits.reissues`` re-issues with the card's Le (6Cxx). Past any bound the card is refused
with a ``CardError`` that names the bound. A card that stops answering in the middle of one
APDU cannot be interrupted here (pcscd and vpcd wait for it without a timeout); the agent's
caller stops waiting for it (``reader_agent.cardthread``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from smartcard import scard

from cardbus.errors import CardError, PcscError

_SERVICE_GONE = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED,
                 scard.SCARD_F_COMM_ERROR,
                 scard.SCARD_E_INVALID_HANDLE, scard.SCARD_E_NO_READERS_AVAILABLE,
                 getattr(scard, "SCARD_E_READER_UNAVAILABLE", -1),
                 getattr(scard, "SCARD_E_UNKNOWN_READER", -2)}
_CARD_GONE = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD,
              scard.SCARD_W_RESET_CARD, scard.SCARD_W_UNPOWERED_CARD,
              scard.SCARD_W_UNRESPONSIVE_CARD, scard.SCARD_E_NOT_TRANSACTED,
              getattr(scard, "SCARD_E_COMM_DATA_LOST", -3)}


@dataclass(frozen=True)
class CardLimits:
    """How far the terminal follows a card in one card step before refusing it."""

    get_response_rounds: int = 32
    """GET RESPONSE commands after one command (61xx): 32 x 256 bytes is far above any EMV
    answer."""
    reissues: int = 1
    """Re-issues of one command with the Le the card asked for (6Cxx): ISO 7816-3 needs one."""
    total_bytes: int = 32 * 1024
    """Bytes the card may send in one card step (a payment dialogue reads about 1.5 KiB)."""
    deadline_s: float = 5.0
    """Seconds one card step may take, from its first command to its last answer."""


DEFAULT_LIMITS = CardLimits()


def _err(hresult: int) -> str:
    return str(scard.SCardGetErrorMessage(hresult)).strip()


def check(hresult: int, what: str) -> None:
    """Raise the CardBus error for a non-success PC/SC result."""
    if hresult == scard.SCARD_S_SUCCESS:
        return
    if hresult in _CARD_GONE:
        raise CardError(f"{what}: card removed or not responding ({_err(hresult)})")
    if hresult in _SERVICE_GONE:
        raise PcscError(f"{what}: PC/SC service or reader gone ({_err(hresult)})")
    raise CardError(f"{what}: {_err(hresult)} (0x{hresult & 0xFFFFFFFF:08X})")


class Context:
    """An established PC/SC context (re-establish after pcscd restarts)."""

    def __init__(self) -> None:
        hresult, self.handle = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            raise PcscError(f"cannot reach pcscd: {_err(hresult)} (start it: cardbus pcscd start)")

    def readers(self) -> list[str]:
        hresult, names = scard.SCardListReaders(self.handle, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        check(hresult, "list readers")
        return list(names)

    def wait(self, states: list[tuple[str, int]], timeout_ms: int
             ) -> list[tuple[str, int, list[int]]]:
        """SCardGetStatusChange; returns [] on timeout."""
        hresult, new = scard.SCardGetStatusChange(self.handle, timeout_ms, states)
        if hresult in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_CANCELLED):
            return []
        check(hresult, "wait for card")
        return list(new)

    def cancel(self) -> None:
        scard.SCardCancel(self.handle)

    def release(self) -> None:
        scard.SCardReleaseContext(self.handle)

    def connect(self, reader: str, limits: CardLimits = DEFAULT_LIMITS) -> CardLink:
        hresult, hcard, proto = scard.SCardConnect(
            self.handle, reader, scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        check(hresult, f"connect to {reader}")
        return CardLink(hcard, proto, reader, limits)


class CardLink:
    """A connected card: ``begin`` a card step, ``transmit`` APDUs, ``disconnect`` when done."""

    def __init__(self, hcard: int, protocol: int, reader: str,
                 limits: CardLimits = DEFAULT_LIMITS) -> None:
        self.hcard = hcard
        self.protocol = protocol
        self.reader = reader
        self.limits = limits
        self.deadline = 0.0
        self.received = 0
        self.begin()

    def begin(self) -> None:
        """Start a card step: a fresh deadline and byte budget (``CardLimits``)."""
        self.deadline = time.monotonic() + self.limits.deadline_s
        self.received = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one C-APDU; return (data, SW), following 6Cxx (re-issue with the card's Le)
        and 61xx (GET RESPONSE) within the link's limits."""
        data, sw = self._exchange(apdu, "transmit")
        reissues = 0
        while sw >> 8 == 0x6C and len(apdu) >= 5:  # wrong Le: resend with the right one
            if reissues >= self.limits.reissues:
                raise CardError(f"card still asked for another length (6Cxx) after "
                                f"{reissues} re-issue{'s' if reissues != 1 else ''}")
            reissues += 1
            apdu = apdu[:-1] + bytes([sw & 0xFF])
            data, sw = self._exchange(apdu, "transmit")
        rounds = 0
        while sw >> 8 == 0x61:  # more data waiting: GET RESPONSE
            if rounds >= self.limits.get_response_rounds:
                raise CardError(f"card still announced more data (61xx) after {rounds} "
                                "GET RESPONSE commands")
            rounds += 1
            more, sw = self._exchange(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]),
                                      "get response")
            data += more
        return data, sw

    def _exchange(self, apdu: bytes, what: str) -> tuple[bytes, int]:
        """One SCardTransmit inside the step's deadline and byte budget."""
        if time.monotonic() > self.deadline:
            raise CardError(f"card took longer than the {self.limits.deadline_s:g} s a card "
                            "step may take")
        hresult, resp = scard.SCardTransmit(self.hcard, self.protocol, list(apdu))
        check(hresult, what)
        self.received += len(resp)
        if self.received > self.limits.total_bytes:
            raise CardError(f"card sent more than the {self.limits.total_bytes} bytes a card "
                            "step may receive")
        if len(resp) < 2:
            raise CardError("card removed or answered fewer than two bytes")
        return bytes(resp[:-2]), (resp[-2] << 8) | resp[-1]

    def disconnect(self, eject: bool = False) -> None:
        scard.SCardDisconnect(self.hcard, scard.SCARD_UNPOWER_CARD if eject
                              else scard.SCARD_LEAVE_CARD)


def wait_present(ctx: Context, reader: str, timeout: float = 5.0, present: bool = True) -> None:
    """Block until ``reader`` holds a card (or, with ``present=False``, is empty)."""
    deadline = time.monotonic() + timeout
    state = scard.SCARD_STATE_UNAWARE
    while time.monotonic() < deadline:
        changes = ctx.wait([(reader, state)], 200)
        for _name, event, _atr in changes:
            state = event & ~scard.SCARD_STATE_CHANGED
            if bool(event & scard.SCARD_STATE_PRESENT) == present and \
                    not event & scard.SCARD_STATE_MUTE:
                return
    raise CardError(f"{reader}: no card {'arrived' if present else 'removal'} in {timeout}s")
