"""A thin PC/SC layer over pyscard's ``smartcard.scard``: one context, connect, transmit.

Every call blocks; the reader agent runs them in threads. pyscard failures become
``CardError`` (card gone, card mute) or ``PcscError`` (pcscd gone).
"""

from __future__ import annotations

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

    def connect(self, reader: str) -> CardLink:
        hresult, hcard, proto = scard.SCardConnect(
            self.handle, reader, scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        check(hresult, f"connect to {reader}")
        return CardLink(hcard, proto, reader)


class CardLink:
    """A connected card: ``transmit`` APDUs, ``disconnect`` when done."""

    def __init__(self, hcard: int, protocol: int, reader: str) -> None:
        self.hcard = hcard
        self.protocol = protocol
        self.reader = reader

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one C-APDU; return (data, SW) with 61xx / 6Cxx handled."""
        hresult, resp = scard.SCardTransmit(self.hcard, self.protocol, list(apdu))
        check(hresult, "transmit")
        if len(resp) < 2:
            raise CardError("card removed or answered fewer than two bytes")
        data, sw = bytes(resp[:-2]), (resp[-2] << 8) | resp[-1]
        if sw >> 8 == 0x6C and len(apdu) >= 5:  # wrong Le: resend with the right one
            return self.transmit(apdu[:-1] + bytes([sw & 0xFF]))
        while sw >> 8 == 0x61:  # more data waiting: GET RESPONSE
            hresult, more = scard.SCardTransmit(self.hcard, self.protocol,
                                                [0x00, 0xC0, 0x00, 0x00, sw & 0xFF])
            check(hresult, "get response")
            data += bytes(more[:-2])
            sw = (more[-2] << 8) | more[-1]
        return data, sw

    def disconnect(self, eject: bool = False) -> None:
        scard.SCardDisconnect(self.hcard, scard.SCARD_UNPOWER_CARD if eject
                              else scard.SCARD_LEAVE_CARD)


def wait_present(ctx: Context, reader: str, timeout: float = 5.0, present: bool = True) -> None:
    """Block until ``reader`` holds a card (or, with ``present=False``, is empty)."""
    import time

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
