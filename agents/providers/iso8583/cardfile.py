"""The bank host's card file: what the host knows about each card it authorizes.

Written by the bridge's side when its adapter issues a card (and by tests, which set behaviour
flags on a card), read by the host (``deploy/iso-host``), which reads it again whenever it
changes. One AES-256-GCM record under the bridge's ``hostfile`` key (the host gets that key on
its stdin); inside, Java properties: ``<PAN>.expiry``, ``.psn``, ``.balance`` (opening, minor
units), ``.currency`` (ISO 4217 numeric), ``.pvki``, ``.pvv``, ``.status`` (active, lost,
stolen, refused) and the test flags ``.delay_ms`` (answer late), ``.drop`` (drop the connection
instead of answering), ``.answer`` (normal, bad-bitmap, short, unknown-stan) and
``.ignore_reversals`` (leave that many reversals of the card unanswered).
"""

from __future__ import annotations

import base64
import fcntl
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cardbus.errors import ConfigError
from cardbus.paths import state_dir

FORMAT = "cardbus-iso-host-cards-v1"
Status = Literal["active", "lost", "stolen", "refused"]
AnswerMode = Literal["normal", "bad-bitmap", "short", "unknown-stan"]


@dataclass(frozen=True)
class HostCard:
    """One card in the host's file."""

    pan: str
    expiry: str  # YYMM
    balance: int
    pvv: str
    pvki: str = "1"
    psn: str = "00"
    currency: str = "156"
    status: Status = "active"
    delay_ms: int = 0
    drop: bool = False
    answer: AnswerMode = "normal"
    ignore_reversals: int = 0

    def __repr__(self) -> str:  # never a PAN or a PVV in a repr
        return f"HostCard({self.pan[:6]}...{self.pan[-4:]}, status={self.status})"


def card_file_path(home: Path | None = None) -> Path:
    """Where the host's card file lives: ``<state>/iso-host/cards.enc``."""
    return (home or state_dir()) / "iso-host" / "cards.enc"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def read_cards(path: Path, aead: AESGCM) -> dict[str, HostCard]:
    """The cards in the file (none if there is no file yet)."""
    if not path.exists():
        return {}
    outer = _props(path.read_text("ascii"))
    if outer.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a {FORMAT} file")
    try:
        clear = aead.decrypt(base64.urlsafe_b64decode(outer["nonce"]),
                             base64.urlsafe_b64decode(outer["ct"]), FORMAT.encode())
    except (InvalidTag, KeyError, ValueError):
        raise ConfigError(f"{path} does not open under the bridge's host-file key") from None
    props = _props(clear.decode())
    cards = {}
    for name in props:
        if name.endswith(".expiry"):
            pan = name.removesuffix(".expiry")
            fields = {k.removeprefix(f"{pan}."): v for k, v in props.items()
                      if k.startswith(f"{pan}.")}
            cards[pan] = HostCard(
                pan=pan, expiry=fields["expiry"], balance=int(fields.get("balance", "0")),
                pvv=fields.get("pvv", ""), pvki=fields.get("pvki", "1"),
                psn=fields.get("psn", "00"), currency=fields.get("currency", "156"),
                status=fields.get("status", "active"),  # type: ignore[arg-type]
                delay_ms=int(fields.get("delay_ms", "0")),
                drop=fields.get("drop", "false") == "true",
                answer=fields.get("answer", "normal"),  # type: ignore[arg-type]
                ignore_reversals=int(fields.get("ignore_reversals", "0")))
    return cards


def write_cards(path: Path, aead: AESGCM, cards: dict[str, HostCard]) -> None:
    """Seal and write the whole file (atomic replace, 0600)."""
    lines = []
    for pan, card in sorted(cards.items()):
        for name, value in asdict(card).items():
            if name != "pan":
                text = str(value).lower() if isinstance(value, bool) else str(value)
                lines.append(f"{pan}.{name}={text}")
    nonce = os.urandom(12)
    ct = aead.encrypt(nonce, "\n".join(lines).encode(), FORMAT.encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"format={FORMAT}\nnonce={_b64(nonce)}\nct={_b64(ct)}\n")
    os.replace(tmp, path)


def update_cards(path: Path, aead: AESGCM,
                 change: Callable[[dict[str, HostCard]], dict[str, HostCard]]) -> None:
    """Read, change and write the file under a lock (several processes issue cards)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        write_cards(path, aead, change(read_cards(path, aead)))


def enrol(path: Path, aead: AESGCM, card: HostCard) -> None:
    """Add ``card`` (or replace the card with its PAN)."""
    update_cards(path, aead, lambda cards: {**cards, card.pan: card})


def set_flags(path: Path, aead: AESGCM, pan: str, **flags: object) -> None:
    """Change a known card's status or behaviour flags (tests, operators)."""
    def change(cards: dict[str, HostCard]) -> dict[str, HostCard]:
        if pan not in cards:
            raise ConfigError("no such card in the host's card file")
        return {**cards, pan: replace(cards[pan], **flags)}  # type: ignore[arg-type]

    update_cards(path, aead, change)
