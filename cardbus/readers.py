"""The virtual reader layout: which vpcd TCP port and PC/SC name virtual reader ``k`` has.

One vpcd reader entry in pcscd's config gives two readers (slots ``00 00`` and ``00 01``) on two
TCP ports. Virtual reader ``k`` (0-based) is entry ``k // 2``, slot ``k % 2``, listening on TCP
port ``base_port + k``; its PC/SC name is ``"CardBus VPCD <k//2> 00 0<k%2>"``. The terminal's
pcscd config (``reader_agent.pcscd``) and the virtual cards (``cards.serve``) both follow it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE_PORT = 29963
"""First vpcd card port. vsmartcard's own default, 35963, lies in Linux's ephemeral range
(32768-60999): a Kafka client socket, or one in TIME_WAIT, may hold it, and then pcscd
cannot listen there ("Address already in use"; a test session hit this once). 29963 is
below that range."""
DEFAULT_READERS = 4
READER_PREFIX = "CardBus VPCD"


@dataclass(frozen=True)
class VirtualReader:
    """One vpcd slot: its index, PC/SC reader name and the TCP port a card connects to."""

    index: int
    name: str
    port: int


def virtual_readers(count: int = DEFAULT_READERS,
                    base_port: int = DEFAULT_BASE_PORT) -> list[VirtualReader]:
    """The readers a config with ``count`` slots exposes."""
    return [VirtualReader(k, f"{READER_PREFIX} {k // 2} 00 {k % 2:02d}", base_port + k)
            for k in range(count)]


def reader_for(index: int, base_port: int = DEFAULT_BASE_PORT) -> VirtualReader:
    """The virtual reader with index ``index``."""
    return virtual_readers(index + 1, base_port)[index]
