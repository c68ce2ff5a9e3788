"""No event field can hold a full PAN, a PIN, a clear key or card secrets.

The rule, applied to every field of every event model and of every model nested in one:

1. A field whose name contains a sensitive word (``SENSITIVE_WORDS``: pan, pin, key, track,
   cvv, secret, private, ...) is refused, unless
2. it is typed ``MaskedPan``, ``PanToken`` or ``EncryptedBlob`` (or a container of them); or
3. it only names, checks or counts a key: the name ends in ``_id``/``_ids``/``kcv`` (values
   are identifiers, not key material), or it is a Kafka *record* key (``record_key`` in the
   name: the routing value, an id or a token); or
4. it holds a public key: the name contains ``public`` and it is typed ``B64``; or
5. it holds other models, whose own fields this same walk checks (``keys``, ``card_auth_keys``);
6. it is one of the documented encrypted formats: ``EncryptedPinBlock`` (an ISO 9564 block
   encrypted under the key named by a sibling ``pin_key_id``) or ``Tr31KeyBlock`` (TR-31: the
   key is encrypted under the KBPK).

The test of the rule itself (``test_the_walk_catches_...``) proves it can fail.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel, ConfigDict

from schemas.base import B64, EncryptedBlob, Event, Hex, MaskedPan, PanToken
from schemas.registry import ALL_EVENTS, type_name
from schemas.values import EncryptedPinBlock, Tr31KeyBlock

SENSITIVE_WORDS = frozenset({
    "pan", "pans", "pin", "pins", "key", "keys", "track", "track1", "track2", "cvv", "cvv2",
    "cvc", "cvn", "icvv", "secret", "private", "password", "passphrase", "seed", "kek", "kbpk",
    "clear", "plaintext", "cleartext", "mk", "imk", "pvv",
})
PROTECTED_TYPES: tuple[Any, ...] = (MaskedPan, PanToken, EncryptedBlob)
ENCRYPTED_FORMATS: dict[Any, str | None] = {EncryptedPinBlock: "pin_key_id", Tr31KeyBlock: None}


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}


def _leaves(annotation: Any, metadata: list[Any] | None = None) -> list[Any]:
    if metadata and get_origin(annotation) is None:  # constraints on a scalar, not a container
        annotation = typing.Annotated[(annotation, *metadata)]
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return [annotation]
    if origin in (typing.Union, types.UnionType, tuple, list, frozenset, set):
        out = []
        for arg in get_args(annotation):
            if arg is not Ellipsis and arg is not type(None):
                out.extend(_leaves(arg))
        return out
    return [annotation]


def violations(model: type[BaseModel], path: str = "") -> list[str]:
    """Every field of ``model`` (recursively) that breaks the rule above."""
    bad = []
    for name, info in model.model_fields.items():
        leaves = _leaves(info.annotation, info.metadata)
        nested = [x for x in leaves if isinstance(x, type) and issubclass(x, BaseModel)
                  and x is not EncryptedBlob]
        for sub in nested:
            bad.extend(violations(sub, f"{path}{name}."))
        if not _words(name) & SENSITIVE_WORDS:
            continue
        if all(leaf in PROTECTED_TYPES for leaf in leaves):
            continue
        if name.endswith(("_id", "_ids", "kcv")) or "record_key" in name:
            continue
        if "public" in _words(name) and all(leaf == B64 for leaf in leaves):
            continue
        if nested and len(nested) == len(leaves):
            continue
        if all(leaf in ENCRYPTED_FORMATS for leaf in leaves):
            siblings = {ENCRYPTED_FORMATS[leaf] for leaf in leaves} - {None}
            if siblings <= set(model.model_fields):
                continue
        bad.append(f"{path}{name}")
    return bad


@pytest.mark.parametrize("model", ALL_EVENTS, ids=[type_name(m) for m in ALL_EVENTS])
def test_no_event_field_can_hold_a_clear_pan_pin_or_key(model: type[Event]) -> None:
    assert violations(model) == []


class _Leaky(BaseModel):
    model_config = ConfigDict(frozen=True)
    pan: str
    pin_block: EncryptedPinBlock  # encrypted format, but no pin_key_id says under which key
    terminal_mac_key: Hex
    track2: str | None = None
    signing_public_key: Hex  # a "public" name does not excuse a non-B64 hex blob
    card_secret_id: str  # an id: allowed


class _Wrapper(BaseModel):
    inner: tuple[_Leaky, ...]
    masked_pan: MaskedPan
    pan_encrypted: EncryptedBlob | None = None


def test_the_walk_catches_every_kind_of_leak_and_excuses_only_the_rule() -> None:
    assert violations(_Wrapper) == [
        "inner.pan", "inner.pin_block", "inner.terminal_mac_key", "inner.track2",
        "inner.signing_public_key",
    ]
