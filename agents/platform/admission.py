"""Admission: who may be routed to, as an operator's signed act (pure, no Kafka, no clock).

A provider's registration proves possession of an identity key; it does not prove the provider
may take anyone's cards. An operator admits a provider (``ProviderAdmitted``, sealed with the
operator's key): its id, the identity key it must register with, and its card ranges. The
platform then routes a registration only when

- an admission exists for its provider id, sealed by the operator (checked when it is stored:
  ``admit_provider``);
- the registration's identity key is the admitted one, and each of its BIN ranges lies inside an
  admitted range and each AID is an admitted one (``check_admitted``);
- no range or AID overlaps another provider's (``check_no_overlap``: two providers claiming one
  card is refused, never resolved by sort order).

Terminals: a new terminal starts ``suspended`` (``decide.enroll_terminal(initial_status=...)``)
until the operator's signed ``TerminalStatusChanged`` activates it (``decide.change_status``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agents.platform.decide import Rejected, Route, register_provider
from cardbus.crypto.signing import Verifier, verify_event
from cardbus.errors import CryptoError
from schemas.providers import ProviderAdmitted, ProviderRegistered
from schemas.values import BinRange


def admit_provider(ev: ProviderAdmitted, admissions: Mapping[str, ProviderAdmitted],
                   operator: Verifier) -> ProviderAdmitted:
    """The admission to store: sealed by ``operator``, and no range or AID of it overlapping
    another provider's admission. ``Rejected`` otherwise."""
    try:
        verify_event(ev, lambda kid: operator if kid == operator.key_id else None)
    except CryptoError as exc:
        raise Rejected(f"admission of {ev.provider_id}: {exc}") from None
    for other in admissions.values():
        if other.provider_id != ev.provider_id:
            _disjoint(ev.provider_id, ev.bin_ranges, (*ev.payment_aids, *ev.transit_aids),
                      other.provider_id, other.bin_ranges,
                      (*other.payment_aids, *other.transit_aids))
    return ev


def check_admitted(ev: ProviderRegistered, admission: ProviderAdmitted | None) -> None:
    """``Rejected`` unless ``admission`` admits this registration: same provider, kind and
    identity key, every BIN range inside an admitted one, every AID admitted."""
    who = f"registration of {ev.provider_id}"
    if admission is None or admission.provider_id != ev.provider_id:
        raise Rejected(f"{who}: no operator admission for this provider")
    if (admission.kind, admission.identity_key_id, admission.identity_public_key) != (
            ev.kind, ev.identity_key_id, ev.identity_public_key):
        raise Rejected(f"{who}: kind or identity key is not the admitted one")
    for r in ev.bin_ranges:
        if not any(_inside(r, a) for a in admission.bin_ranges):
            raise Rejected(f"{who}: BIN range {r.low}-{r.high} is not admitted")
    extra = (set(ev.payment_aids) - set(admission.payment_aids)) | (
        set(ev.transit_aids) - set(admission.transit_aids))
    if extra:
        raise Rejected(f"{who}: AIDs {', '.join(sorted(extra))} are not admitted")


def check_no_overlap(ev: ProviderRegistered, routes: Mapping[str, Route]) -> None:
    """``Rejected`` if a BIN range or AID of ``ev`` is another provider's too."""
    for route in routes.values():
        if route.provider_id != ev.provider_id:
            _disjoint(ev.provider_id, ev.bin_ranges, (*ev.payment_aids, *ev.transit_aids),
                      route.provider_id, route.bin_ranges,
                      (*route.payment_aids, *route.transit_aids))


def _disjoint(pid: str, ranges: Iterable[BinRange], aids: Iterable[str], other: str,
              other_ranges: Iterable[BinRange], other_aids: Iterable[str]) -> None:
    others = tuple(other_ranges)
    for r in ranges:
        for o in others:
            if overlap(r, o):
                raise Rejected(f"{pid}: BIN range {r.low}-{r.high} overlaps {other}'s "
                               f"{o.low}-{o.high}")
    shared = set(aids) & set(other_aids)
    if shared:
        raise Rejected(f"{pid}: AIDs {', '.join(sorted(shared))} are {other}'s too")


def _span(r: BinRange, digits: int) -> tuple[int, int]:
    """The range as PAN-prefix integers of ``digits`` digits (a 6-digit range is a span of
    8-digit prefixes: 622202 -> 62220200..62220299)."""
    pad = digits - len(r.low)
    return int(r.low) * 10**pad, (int(r.high) + 1) * 10**pad - 1


def overlap(a: BinRange, b: BinRange) -> bool:
    """Whether some card number falls in both ranges (ranges of different lengths compared
    as prefixes)."""
    digits = max(len(a.low), len(b.low))
    (a_lo, a_hi), (b_lo, b_hi) = _span(a, digits), _span(b, digits)
    return a_lo <= b_hi and b_lo <= a_hi


def _inside(r: BinRange, outer: BinRange) -> bool:
    digits = max(len(r.low), len(outer.low))
    (lo, hi), (o_lo, o_hi) = _span(r, digits), _span(outer, digits)
    return o_lo <= lo and hi <= o_hi


def register_admitted(ev: ProviderRegistered, current: Route | None, *,
                      admission: ProviderAdmitted | None,
                      routes: Mapping[str, Route]) -> Route:
    """``decide.register_provider`` for an admitted provider only: the registration's proof
    of possession, then its admission, then no overlap with another provider's cards."""
    route = register_provider(ev, current)
    check_admitted(ev, admission)
    check_no_overlap(ev, routes)
    return route
