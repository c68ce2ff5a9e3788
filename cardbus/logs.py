"""Logging, configured in one place.

- JSON lines when stderr is not a terminal, a readable console otherwise;
- the correlation id (the payment) bound per flow with ``bind_correlation`` (contextvars), so
  every line logged while handling that payment carries it;
- a redaction processor that runs before rendering: a PAN anywhere in a value is cut to BIN +
  last four, and PIN blocks, PINs and key material are dropped whatever key they sit under.

Call ``configure()`` once per process (the CLI does). Tests assert on log output with
``structlog.testing.capture_logs(processors=[redact])``.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import structlog

from schemas.base import luhn_ok

REDACTED = "[redacted]"

# Keys whose values are never logged, whatever their shape. Matched as whole words inside the
# key name, so ``pin_block``, ``terminalPinKey``, ``kbpk``, ``private_key_pem`` all match.
_SECRET_KEY_WORDS = re.compile(
    r"(pin|pinblock|pvv|secret|password|passphrase|private|priv|seed|kek|kbpk|imk|mk|"
    r"key|keys|keyblock|key_block|cvv|cvc|cvv2|track|track1|track2|plaintext|cleartext|clear)",
    re.IGNORECASE,
)
# Key names that contain "key" but only name or identify a key: safe to log.
_SAFE_KEYS = frozenset(
    {"key_id", "keyid", "key_ids", "kcv", "key_usage", "usage", "key_version", "kid",
     "partition_key", "message_key", "topic_key", "public_key_id", "key_count", "keys_issued"}
)
_PAN_RUN = re.compile(r"(?<![\d-])(\d(?:[ -]?\d){11,18})(?![\d])")
"""12-19 digits, one space or dash allowed between any two (``4111 1111 1111 1111``,
``4111-1111-1111-1111``): the PAN lengths ISO/IEC 7812 allows, as people write them."""
# ``name=value`` inside a repr (``Sale(... pin='4321')``): a secret name's value is dropped
_REPR_FIELD = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=('[^']*'|\"[^\"]*\"|b'[^']*'|[^,)\s]+)")
# Long hex runs (>= 32 hex digits = 128 bits) look like key material or PIN blocks.
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")


def _split_words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_secret_key(key: str) -> bool:
    """True if a field called ``key`` may hold a PIN, PIN block, key or card secret."""
    lowered = key.lower()
    if lowered in _SAFE_KEYS or lowered.endswith(("_id", "_ids", "_kcv", "_count")):
        return False
    words = _split_words(key)
    joined = "".join(words)
    if joined in {"pinblock", "keyblock"}:
        return True
    return any(_SECRET_KEY_WORDS.fullmatch(w) for w in words)


def mask_pans(text: str) -> str:
    """Cut every Luhn-valid run of 12-19 digits in ``text`` (spaces or dashes between digits
    allowed) to BIN + last four."""

    def _mask(m: re.Match[str]) -> str:
        written = m.group(1)
        digits = written.replace(" ", "").replace("-", "")
        if not luhn_ok(digits):
            return written
        return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]

    return _PAN_RUN.sub(_mask, text)


def _redact_repr(text: str) -> str:
    """``name=value`` pairs of a repr with a secret name (``pin='4321'``) dropped."""
    return _REPR_FIELD.sub(
        lambda m: f"{m.group(1)}={REDACTED}" if is_secret_key(m.group(1)) else m.group(0), text)


def _clean(value: Any, *, identifier: bool = False) -> Any:
    if isinstance(value, str):
        # ids (payment ids, event ids) are long hex by design; elsewhere a long hex run looks
        # like key material or a PIN block
        text = mask_pans(_redact_repr(value))
        return text if identifier else _HEX_RUN.sub(REDACTED, text)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_key(str(k)) else _clean(v)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and 10**11 <= abs(value) < 10**19:
        return mask_pans(str(value))
    if value is None or isinstance(value, bool | int | float):
        return value
    # any other object is logged by its repr: its secret fields dropped, PANs masked
    return _HEX_RUN.sub(REDACTED, mask_pans(_redact_repr(repr(value))))


def _is_identifier(key: str) -> bool:
    lowered = key.lower()
    return lowered == "id" or lowered.endswith(("_id", "_ids"))


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask PANs, drop PIN blocks, PINs and key material."""
    for key in list(event_dict):
        if key in ("event", "level", "timestamp", "logger"):
            if isinstance(event_dict[key], str):
                event_dict[key] = _clean(event_dict[key])
            continue
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _clean(event_dict[key], identifier=_is_identifier(key))
    return event_dict


def configure(level: str = "INFO", *, json: bool | None = None,
              path: Path | None = None) -> None:
    """Configure structlog and the stdlib root logger for this process: to stderr, or, with
    ``path``, appended to that file as JSON lines (commands whose output is a result keep
    their terminal for it)."""
    global _log_file
    previous, _log_file = _log_file, None
    stream: TextIO = _STDERR
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = _log_file = path.open("a", encoding="utf-8", buffering=1)
        json = True
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiokafka, faust, mode) log through the stdlib: keep them quiet but visible,
    # and through the same redaction and renderer as CardBus's own lines.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared]))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    # aiokafka logs transient, retried conditions (a partition leader not elected yet, a
    # coordinator moving) at ERROR; it retries them itself, and what it cannot retry reaches
    # CardBus as an exception. Keep those two chatty loggers for real trouble only.
    for name in ("aiokafka.consumer.fetcher", "aiokafka.consumer.group_coordinator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if previous is not None:  # a second configure (tests run commands in process)
        previous.close()


class _Stderr:
    """``sys.stderr`` as it is at each write (a test runner swaps it per test; a handler that
    kept the first one would write to a closed file)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


_STDERR: Any = _Stderr()
_log_file: TextIO | None = None
"""The log file ``configure`` opened, if any (closed by the next ``configure`` or at exit)."""


@atexit.register
def _close_log_file() -> None:
    if _log_file is not None:
        _log_file.close()


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; ``name`` is bound as ``logger``."""
    log = structlog.get_logger()
    return log.bind(logger=name) if name else log


@contextmanager
def bind_correlation(correlation_id: str, **extra: Any) -> Iterator[None]:
    """Bind ``correlation_id`` (and ``extra``) to every log line inside the block."""
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id, **extra):
        yield
