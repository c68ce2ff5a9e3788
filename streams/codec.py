"""The one encoder/decoder of CardBus events: compact JSON on the wire, pydantic on each side.

Plain aiokafka::

    producer.send(topic, encode(event, topic=topic))
    event = decode(msg.topic, msg.value)            # or decode(adapter, data)

Faust::

    app.topic(name, value_serializer=faust_codec(name))   # returns the registered codec name

Both go through ``encode``/``decode`` below. Every way a payload can be wrong ends in one error,
``cardbus.errors.DecodeError`` with ``.reason`` (a sentence that names the field) and ``.field``
(dotted path, or None); agents turn it into an ``EventDeadLettered``. Under Faust the decode
error arrives wrapped in ``faust.exceptions.ValueDecodeError``: its ``__cause__`` is ours.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar, overload

import orjson
from faust.serializers import codecs as faust_codecs
from pydantic import TypeAdapter, ValidationError

from cardbus.errors import DecodeError, EncodeError
from schemas.base import Event
from schemas.registry import ANY_EVENT, CURRENT_VERSIONS
from schemas.upcast import UpcastError, upcast
from streams.topics import topic_spec

E = TypeVar("E", bound=Event)
E2 = TypeVar("E2", bound=Event)
E3 = TypeVar("E3", bound=Event)
E4 = TypeVar("E4", bound=Event)
E5 = TypeVar("E5", bound=Event)

MAX_PAYLOAD_BYTES = 64 * 1024
"""The largest value CardBus writes or accepts (a tap or a key set is a few KiB)."""

_MAX_ERRORS_IN_REASON = 5


def encode(event: Event, *, topic: str | None = None, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """Compact JSON bytes of ``event``; with ``topic``, refuse a type the topic does not carry."""
    if not isinstance(event, Event):
        raise EncodeError(f"not a CardBus event: {type(event).__name__}")
    if topic is not None and event.type not in _topic_types(topic)[1]:
        raise EncodeError(f"type: {event.type} does not belong on topic {topic}", field="type")
    data = event.model_dump_json().encode()
    if len(data) > max_bytes:
        raise EncodeError(f"{event.type} is {len(data)} bytes, over the {max_bytes}-byte limit")
    return data


def decode(source: str | TypeAdapter[Any] | None, data: bytes | bytearray | memoryview | None,
           *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Event:
    """Decode ``data`` with the union of topic ``source`` (a name), a TypeAdapter, or any event
    when None. Raises ``DecodeError`` for anything that is not exactly a valid event."""
    event, _raw = decode_raw(source, data, max_bytes=max_bytes)
    return event


_Source = str | TypeAdapter[Any] | None
_Data = bytes | bytearray | memoryview | None


@overload
def decode_as(source: _Source, data: _Data, kind: type[E], *, max_bytes: int = ...) -> E: ...


@overload
def decode_as(source: _Source, data: _Data, kind: tuple[type[E], type[E2]], *,
              max_bytes: int = ...) -> E | E2: ...


@overload
def decode_as(source: _Source, data: _Data, kind: tuple[type[E], type[E2], type[E3]], *,
              max_bytes: int = ...) -> E | E2 | E3: ...


@overload
def decode_as(source: _Source, data: _Data,
              kind: tuple[type[E], type[E2], type[E3], type[E4]], *,
              max_bytes: int = ...) -> E | E2 | E3 | E4: ...


@overload
def decode_as(source: _Source, data: _Data,
              kind: tuple[type[E], type[E2], type[E3], type[E4], type[E5]], *,
              max_bytes: int = ...) -> E | E2 | E3 | E4 | E5: ...


def decode_as(source: _Source, data: _Data, kind: type[Event] | tuple[type[Event], ...], *,
              max_bytes: int = MAX_PAYLOAD_BYTES) -> Event:
    """``decode`` for a handler of one event type (or a few, as a tuple): any other type, even
    one the topic carries, is a ``DecodeError`` (so a dead letter), never a crash in the
    handler; the result is typed as what the handler takes."""
    event = decode(source, data, max_bytes=max_bytes)
    if not isinstance(event, kind):
        names = ", ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DecodeError(f"type: {event.type} is not handled here (expected {names})",
                          field="type")
    return event


def decode_raw(source: str | TypeAdapter[Any] | None,
               data: bytes | bytearray | memoryview | None,
               *, max_bytes: int = MAX_PAYLOAD_BYTES) -> tuple[Event, dict[str, Any]]:
    """Like ``decode``, also returning the original JSON object (before any upcast), which is
    what a seal made on an old schema version covers."""
    adapter, allowed = _adapter(source)
    raw = parse(data, max_bytes=max_bytes)
    current = CURRENT_VERSIONS.get(raw["type"])
    if current is None:
        raise DecodeError(f"type: unknown event type {raw['type']!r}", field="type")
    if allowed is not None and raw["type"] not in allowed:
        raise DecodeError(f"type: {raw['type']!r} does not belong on this topic "
                          f"(expected one of {', '.join(allowed)})", field="type")
    try:
        upcasted = raw if raw["schema_version"] == current else upcast(dict(raw), current)
    except UpcastError as exc:
        raise DecodeError(str(exc), field=exc.field) from None
    try:
        event = adapter.validate_python(upcasted)
    except ValidationError as exc:
        raise _decode_error(exc, raw["type"]) from None
    if not isinstance(event, Event):  # pragma: no cover - adapters here only hold events
        raise DecodeError("not an event")
    return event, raw


def parse(data: bytes | bytearray | memoryview | None, *,
          max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """The JSON object in ``data``, checked for size, syntax, duplicate keys, ``type`` and
    ``schema_version``; nothing about the event's own fields yet."""
    if data is None:
        raise DecodeError("payload: empty message (tombstone or null value)")
    if len(data) > max_bytes:
        raise DecodeError(f"payload: {len(data)} bytes is over the {max_bytes}-byte limit")
    raw = _parse_exact(data)
    if raw is None:
        raw = _parse_strict(data)
    tag = raw.get("type")
    if not isinstance(tag, str):
        raise DecodeError("type: missing or not a string", field="type")
    version = raw.get("schema_version")
    if type(version) is not int:
        raise DecodeError("schema_version: missing or not an integer", field="schema_version")
    return raw


def _parse_exact(data: bytes | bytearray | memoryview) -> dict[str, Any] | None:
    """The fast path (orjson, ~5x faster): the object in ``data`` if orjson reads it and writes
    it back to the very same bytes, as it does for every payload ``encode`` writes; else None.

    Equal bytes prove there is no duplicate key (a duplicate would be written once, so the
    bytes would differ), and orjson refuses what the strict path refuses too (bad UTF-8, NaN,
    lone surrogates). Everything else (other spacing, escapes, key order, big integers)
    goes to ``_parse_strict``, which gives the verdict and the reason."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    try:
        again = orjson.dumps(raw)
    except (orjson.JSONEncodeError, TypeError):
        return None
    return raw if again == data else None


def _parse_strict(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Any JSON text: strict UTF-8, no duplicate key, no NaN/Infinity, an object."""
    try:
        text = bytes(data).decode("utf-8")  # strictly UTF-8 (json.loads would guess UTF-16/32)
        raw = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"payload: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"payload: malformed JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:  # nesting deeper than the parser's stack: no event is like that
        raise DecodeError("payload: JSON nested too deeply") from None
    if not isinstance(raw, dict):
        raise DecodeError(f"payload: expected a JSON object, got {type(raw).__name__}")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # rare: find which key came twice, for the reason
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise DecodeError(f"{key}: duplicate key in JSON object", field=key)
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise DecodeError(f"payload: {name} is not valid JSON")


def _adapter(source: str | TypeAdapter[Any] | None
             ) -> tuple[TypeAdapter[Any], tuple[str, ...] | None]:
    if source is None:
        return ANY_EVENT, None
    if isinstance(source, str):
        return _topic_types(source)
    return source, None


_BY_TOPIC: dict[str, tuple[TypeAdapter[Any], tuple[str, ...]]] = {}


def _topic_types(topic: str) -> tuple[TypeAdapter[Any], tuple[str, ...]]:
    """A topic's union adapter and value type names, looked up once per topic name (every
    record is decoded and encoded through this: the lookup was ~2.5% of a worker's CPU)."""
    hit = _BY_TOPIC.get(topic)
    if hit is None:
        spec = topic_spec(topic)
        hit = _BY_TOPIC[topic] = (spec.adapter, spec.value_types)
    return hit


def _decode_error(exc: ValidationError, tag: str) -> DecodeError:
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    first_field: str | None = None
    for err in errors[:_MAX_ERRORS_IN_REASON]:
        loc = list(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = "type"
            msg = f"{tag!r} does not belong on this topic ({err['msg']})"
        else:
            if loc and loc[0] == tag:  # the discriminated union's branch name
                loc = loc[1:]
            path = ".".join(str(p) for p in loc) or "event"
            msg = err["msg"]
        first_field = first_field or path
        parts.append(f"{path}: {msg}")
    more = len(errors) - _MAX_ERRORS_IN_REASON
    if more > 0:
        parts.append(f"and {more} more")
    return DecodeError(f"{tag}: " + "; ".join(parts), field=first_field)


class EventCodec(faust_codecs.Codec):
    """A Faust codec over ``encode``/``decode`` for one topic (or any event, topic=None)."""

    def __init__(self, children: tuple[Any, ...] | None = None, *, topic: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(children, topic=topic, **kwargs)
        self.topic = topic

    def _dumps(self, obj: Any) -> bytes:
        return encode(obj, topic=self.topic)

    def _loads(self, s: bytes) -> Any:
        return decode(self.topic, s)


ANY_CODEC = "cardbus.event"


def faust_codec(topic: str | None = None) -> str:
    """Register (once) the Faust codec for ``topic`` and return its name (= the topic name,
    or ``cardbus.event`` for any event); pass it as ``value_serializer``."""
    name = ANY_CODEC if topic is None else topic
    if topic is not None:
        topic_spec(topic)  # an unknown topic fails here, at wiring time
    if name not in faust_codecs.codecs:
        faust_codecs.register(name, EventCodec(topic=topic))
    return name
