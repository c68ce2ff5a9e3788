"""Cross-topic checks over the facts of every event: pure, no Kafka, no keys.

- duplicates: the same event id twice with identical bytes is a redelivery (counted); with
  different bytes, a conflict;
- hash chains: per chain id, sequence 0, 1, 2, ... each ``prev_hash`` the hash of the one before;
- replays: two requests carrying the same card cryptogram (PAN token, ATC, ARQC);
- completeness: every payment request has exactly one outcome, a timeout decline its reversal,
  every reversal its answer, every approved transit payment its confirmed load or a reversal,
  every card-management session its one outcome;
- settlement: each batch's approved/declined figures against the decisions of its chain range;
- re-derivation: recorded decisions and batches against the re-derived ones, byte for byte.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

from agents.providers.state import GENESIS_HASH
from audit.model import (
    ANSWER,
    CHAIN,
    COMPLETENESS,
    CONFLICT,
    LEDGER,
    REDERIVE,
    REPLAY,
    Fact,
    Finding,
)
from audit.rederive import Output, PartitionReplay
from cardbus.response_codes import APPROVED, ISSUER_UNAVAILABLE

RESULTS, SETTLEMENTS = "provider-results", "settlements"
REDERIVED_TYPES = frozenset({"AuthorizationDecided", "ReversalCompleted", "SettlementBatchClosed",
                             "TransitLoadAuthorized", "TransitLoadConfirmed"})
"""The providers' outputs the re-derivation gives (a transit operator's load answers too)."""


def _at(f: Fact, kind: str, reason: str) -> Finding:
    return Finding(kind, f.topic, f.partition, f.offset, reason)


@dataclass
class Window:
    """The audited range: ``end_ms`` is its end (time of the last record, or ``--to``);
    ``partial`` means it started after the beginning (``--from``), so causes may precede it."""

    end_ms: int
    timeout_ms: int
    partial: bool = False

    def overdue(self, f: Fact) -> bool:
        """Whether an answer to ``f`` should have been recorded by the end of the range."""
        return self.overdue_ms(f.timestamp_ms)

    def overdue_ms(self, timestamp_ms: int) -> bool:
        return timestamp_ms + self.timeout_ms <= self.end_ms


def dedupe(facts: Iterable[Fact]) -> tuple[list[Fact], list[Finding], int]:
    """First occurrence of each (topic, event id); conflicts; how many redeliveries."""
    first: dict[tuple[str, str], Fact] = {}
    unique: list[Fact] = []
    findings: list[Finding] = []
    redelivered = 0
    for f in facts:
        key = (f.topic, f.event_id)
        seen = first.get(key)
        if seen is None:
            first[key] = f
            unique.append(f)
        elif seen.digest == f.digest:
            redelivered += 1
        else:
            findings.append(_at(f, CONFLICT, f"{f.type} {f.event_id} differs from the event with "
                                             f"the same id at {seen.topic}/{seen.partition}@"
                                             f"{seen.offset}"))
    return unique, findings, redelivered


def check_chains(decisions: list[Fact], window: Window) -> tuple[list[Finding], int]:
    """Each chain: sequence +1 and prev_hash = hash of the previous decision. Returns the
    findings and how many chains were checked."""
    chains: dict[str, list[Fact]] = defaultdict(list)
    findings: list[Finding] = []
    for f in decisions:
        d = f.data
        if not d["chain_id"].startswith(f"{d['provider_id']}.p"):
            findings.append(_at(f, CHAIN, f"decision {f.event_id} of {d['provider_id']} claims "
                                          f"chain {d['chain_id']}"))
        chains[d["chain_id"]].append(f)
    for chain_id, items in chains.items():
        prev: Fact | None = None
        for f in items:
            d = f.data
            if prev is None:
                if not window.partial and (d["sequence"] != 0 or d["prev_hash"] != GENESIS_HASH):
                    findings.append(_at(f, CHAIN, (
                        f"chain {chain_id} starts at sequence {d['sequence']} (prev_hash "
                        f"{d['prev_hash'][:12]}...): decisions before it are missing")))
            else:
                p = prev.data
                if d["sequence"] != p["sequence"] + 1:
                    gap = ("missing (deleted?)" if d["sequence"] > p["sequence"] + 1
                           else "out of order (reordered or replayed)")
                    findings.append(_at(f, CHAIN, (
                        f"chain {chain_id}: sequence {d['sequence']} follows {p['sequence']}: "
                        f"{gap}")))
                elif d["prev_hash"] != p["hash"]:
                    findings.append(_at(f, CHAIN, (
                        f"chain {chain_id} sequence {d['sequence']}: prev_hash "
                        f"{d['prev_hash'][:12]}... is not the hash of decision {p['sequence']} "
                        f"at {prev.topic}/{prev.partition}@{prev.offset} ({p['hash'][:12]}...): "
                        f"that decision was altered, or one was removed")))
            prev = f
    return findings, len(chains)


def check_replays(requests: list[Fact]) -> list[Finding]:
    """Two payment requests with one card cryptogram: the later one is a replay."""
    seen: dict[tuple[str, int, str], Fact] = {}
    findings: list[Finding] = []
    for f in requests:
        key = (f.data["pan_token"], f.data["atc"], f.data["arqc"])
        first = seen.setdefault(key, f)
        if first is not f:
            findings.append(_at(f, REPLAY, (
                f"{f.type} {f.event_id} reuses the card cryptogram (ATC {f.data['atc']}) of "
                f"{first.event_id} at {first.topic}/{first.partition}@{first.offset}")))
    return findings


def check_completeness(by_type: dict[str, list[Fact]], dead: set[tuple[str, int, int]],
                       window: Window) -> tuple[list[Finding], dict[str, int]]:
    """Outcomes: exactly one per request; reversals for timeouts; answers for reversals;
    transit loads confirmed or reversed. Returns findings and counts (pending, ...)."""
    findings: list[Finding] = []
    counts = {"pending_at_end": 0, "payments": 0, "timeouts": 0, "dead_lettered_requests": 0}
    completed: dict[str, list[Fact]] = defaultdict(list)
    for f in by_type.get("PaymentCompleted", []):
        completed[f.correlation_id].append(f)
    reversals: dict[str, list[Fact]] = defaultdict(list)
    for f in by_type.get("ReversalRequested", []):
        reversals[f.correlation_id].append(f)
    requested = {f.correlation_id: f for f in by_type.get("PaymentRequested", [])}
    cancelled = {f.correlation_id: f for f in by_type.get("PaymentCancelled", [])}
    forwarded = {f.correlation_id for f in by_type.get("AuthorizationRequested", [])}
    counts["cancelled_by_terminal"] = len(cancelled)
    for cid, f in requested.items():
        counts["payments"] += 1
        outcomes = completed.get(cid, [])
        if (f.topic, f.partition, f.offset) in dead:
            counts["dead_lettered_requests"] += 1
            continue
        if cid in cancelled:  # the terminal's own outcome: "no answer"; the bank must undo
            undone = any(r.data["reason"] in ("terminal_cancelled", "timeout")
                         for r in reversals.get(cid, []))
            if cid in forwarded and not undone and window.overdue(cancelled[cid]):
                findings.append(_at(cancelled[cid], COMPLETENESS, (
                    f"payment {cid} was cancelled by its terminal but no reversal was sent "
                    f"to its provider")))
            continue
        if not outcomes:
            if window.overdue(f):
                findings.append(_at(f, COMPLETENESS, (
                    f"payment {cid} (request {f.event_id}) has no outcome after "
                    f"{window.timeout_ms // 1000} s")))
            else:
                counts["pending_at_end"] += 1
            continue
        if len({o.event_id for o in outcomes}) > 1:
            codes = ", ".join(sorted(o.data["code"] for o in outcomes))
            findings.append(_at(outcomes[1], COMPLETENESS, (
                f"payment {cid} has {len(outcomes)} different outcomes ({codes})")))
    for cid, outcomes in completed.items():
        o = outcomes[0]
        if cid not in requested and not window.partial:
            findings.append(_at(o, COMPLETENESS, f"outcome {o.event_id} answers no payment "
                                                 f"request ({cid})"))
        if o.data["code"] == ISSUER_UNAVAILABLE and o.data["provider_id"]:
            counts["timeouts"] += 1
            has_reversal = any(r.data["reason"] == "timeout" for r in reversals.get(cid, []))
            if not has_reversal and window.overdue(o):
                findings.append(_at(o, COMPLETENESS, (
                    f"payment {cid} timed out (91) but no timeout reversal was sent to "
                    f"{o.data['provider_id']}")))
    answered = {f.data["original_event_id"] for f in by_type.get("ReversalCompleted", [])}
    for cid, revs in reversals.items():
        for r in revs:
            if r.data["original_event_id"] not in answered and window.overdue(r):
                findings.append(_at(r, COMPLETENESS, (
                    f"reversal {r.event_id} ({r.data['reason']}) of payment {cid} has no "
                    f"answer from {r.data['provider_id']}")))
    findings += _transit(by_type, requested, completed, reversals, window)
    findings += _card_sessions(by_type, window, counts)
    return findings, counts


def _transit(by_type: dict[str, list[Fact]], requested: dict[str, Fact],
             completed: dict[str, list[Fact]], reversals: dict[str, list[Fact]],
             window: Window) -> list[Finding]:
    """Every approved transit_load payment ends in a confirmed load or a reversal."""
    findings: list[Finding] = []
    confirmed: dict[str, list[Fact]] = defaultdict(list)
    for f in by_type.get("TransitLoadConfirmed", []):
        if f.data.get("confirmed"):
            confirmed[f.correlation_id].append(f)
    for cid, f in requested.items():
        if f.data["purpose"] != "transit_load":
            continue
        outcomes = completed.get(cid, [])
        if not outcomes or not outcomes[0].data["approved"]:
            continue
        loads = {c.event_id for c in confirmed.get(cid, [])}
        reversed_ = [r for r in reversals.get(cid, []) if r.data["reason"] ==
                     "transit_load_failed"]
        if len(loads) > 1:
            findings.append(_at(f, COMPLETENESS, f"transit payment {cid} has {len(loads)} "
                                                 f"confirmed loads"))
        elif not loads and not reversed_ and window.overdue(outcomes[0]):
            findings.append(_at(f, COMPLETENESS, (
                f"approved transit payment {cid} has neither a confirmed load nor a reversal")))
    return findings


def _card_sessions(by_type: dict[str, list[Fact]], window: Window,
                   counts: dict[str, int]) -> list[Finding]:
    """Every card-management request ends in exactly one outcome (the platform's
    ``CardManagementCompleted``, success or refusal), and no outcome answers no request."""
    findings: list[Finding] = []
    ended: dict[str, list[Fact]] = defaultdict(list)
    for f in by_type.get("CardManagementCompleted", []):
        ended[f.correlation_id].append(f)
    asked = {f.correlation_id: f for f in by_type.get("CardManagementRequested", [])}
    counts["card_sessions"] = len(asked)
    for sid, f in asked.items():
        outcomes = ended.get(sid, [])
        if len(outcomes) > 1:
            findings.append(_at(outcomes[1], COMPLETENESS, (
                f"card-management session {sid} has {len(outcomes)} outcomes")))
        elif not outcomes and window.overdue(f):
            findings.append(_at(f, COMPLETENESS, (
                f"card-management session {sid} (request {f.event_id}) has no outcome")))
    for sid, outcomes in ended.items():
        if sid not in asked and not window.partial:
            findings.append(_at(outcomes[0], COMPLETENESS, (
                f"card-management outcome {outcomes[0].event_id} answers no request")))
    return findings


def check_settlements(decisions: list[Fact], batches: list[Fact]) -> list[Finding]:
    """Each batch's approved count/amount and declined count against its chain's decisions."""
    by_chain: dict[str, dict[int, Fact]] = defaultdict(dict)
    for f in decisions:
        by_chain[f.data["chain_id"]].setdefault(f.data["sequence"], f)
    findings: list[Finding] = []
    for b in batches:
        d = b.data
        chain_id = f"{d['provider_id']}.{d['batch_id'].rsplit('.', 1)[-1]}"
        chain = by_chain.get(chain_id, {})
        covered = [chain.get(s) for s in range(d["first_sequence"], d["last_sequence"] + 1)]
        if any(c is None for c in covered):
            continue  # decisions outside the audited range (or missing: the chain says so)
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        declined = 0
        for c in covered:
            assert c is not None
            if c.data["approved"]:
                totals[c.data["currency"]][0] += 1
                totals[c.data["currency"]][1] += c.data["amount"]
            else:
                declined += 1
        stated = {cur: tuple(v) for cur, v in d["totals"].items()}
        recomputed = {cur: tuple(v) for cur, v in totals.items()}
        if stated != recomputed or declined != d["declined_count"]:
            findings.append(_at(b, LEDGER, (
                f"batch {d['batch_id']} of {d['provider_id']} states approved (count, amount) "
                f"{stated} and {d['declined_count']} declined; its decisions "
                f"{d['first_sequence']}..{d['last_sequence']} give {recomputed} and {declined}")))
    return findings


def check_answers(decisions: list[Fact], completed: list[Fact]) -> list[Finding]:
    """The platform's answer to each terminal against its bank's decision: the same approval
    and response code, unless the platform answered "issuer unavailable" (91: its timeout,
    the late decision is reversed, which ``check_completeness`` checks)."""
    decided: dict[str, Fact] = {}
    for decision in decisions:
        decided.setdefault(decision.correlation_id, decision)
    findings: list[Finding] = []
    for f in completed:
        d = decided.get(f.correlation_id)
        if d is None or f.data["code"] == ISSUER_UNAVAILABLE:
            continue
        if (f.data["approved"], f.data["code"]) != (d.data["approved"], d.data["code"]):
            findings.append(_at(f, ANSWER, (
                f"payment {f.correlation_id}: the platform told terminal "
                f"{f.data['terminal_id']} code {f.data['code']} (approved: {f.data['approved']})"
                f" but {d.data['provider_id']} decided {d.data['code']} (approved: "
                f"{d.data['approved']}) at {d.topic}/{d.partition}@{d.offset}")))
    return findings


def compare_rederived(replays: list[PartitionReplay], recorded: dict[tuple[str, str], Fact],
                      raw: dict[tuple[str, int, int], bytes | None], window: Window,
                      in_range: Container[tuple[str, int, int]] | None = None
                      ) -> tuple[list[Finding], dict[tuple[str, str], str]]:
    """Recorded decisions/reversals/batches vs re-derived ones, byte for byte.

    ``recorded`` maps (topic, event id) -> fact; ``raw`` gives the recorded bytes by location.
    Returns the findings and the outputs that matched: (topic, event id) -> their digest."""
    findings: list[Finding] = []
    matched: dict[tuple[str, str], str] = {}
    derived: set[tuple[str, str]] = set()
    heads: dict[str, int] = {}
    for f in recorded.values():
        if f.type == "AuthorizationDecided":
            cid = f.data["chain_id"]
            heads[cid] = max(heads.get(cid, -1), f.data["sequence"])
    for rp in replays:
        topic = f"provider.{rp.provider_id}.requests"
        for out in rp.outputs:
            key = (out.topic, out.event_id)
            derived.add(key)
            found = recorded.get(key)
            if found is None:
                late = window.overdue_ms(out.source_timestamp_ms) or _superseded(out, heads)
                if late and _counts(out, window, in_range, topic, rp.partition):
                    findings.append(Finding(REDERIVE, topic, rp.partition, out.source_offset, (
                        f"the {out.type} {out.event_id} this request re-derives is not on "
                        f"{out.topic} (removed?)")))
                continue
            if found.digest == out.digest:
                matched[key] = out.digest
                continue
            recorded_bytes = raw.get(found.where())
            findings.append(_at(found, REDERIVE, (
                f"recorded {found.type} {found.event_id} differs from the re-derived one: "
                f"{diff(recorded_bytes, out.data)}")))
    replayed = {r.provider_id for r in replays}
    for (topic, event_id), f in recorded.items():
        if (topic, event_id) in derived or f.type not in REDERIVED_TYPES:
            continue
        pid = f.data.get("provider_id") or f.data.get("operator_id")
        if replays and pid in replayed:
            findings.append(_at(f, REDERIVE, (
                f"{f.type} {event_id} is not the answer to any recorded request of "
                f"{pid} (forged, or its request was removed)")))
    return findings, matched


def _superseded(out: Output, heads: dict[str, int]) -> bool:
    """A missing decision whose chain has later decisions recorded: it was removed."""
    if out.type != "AuthorizationDecided":
        return False
    d = json.loads(out.data)
    return bool(heads.get(d["chain_id"], -1) > d["sequence"])


def _counts(out: Output, window: Window, in_range: Container[tuple[str, int, int]] | None,
            topic: str, partition: int) -> bool:
    """Whether a missing output counts: its request is inside the audited range."""
    return in_range is None or (topic, partition, out.source_offset) in in_range


def diff(recorded: bytes | None, derived: bytes) -> str:
    """The fields two encoded events differ in (the seal aside), recorded against re-derived."""
    if recorded is None:
        return "recorded bytes unavailable"
    try:
        a: dict[str, Any] = json.loads(recorded)
        b: dict[str, Any] = json.loads(derived)
    except ValueError:
        return "recorded bytes are not JSON"
    fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    parts = [f"{k}: recorded {_short(a.get(k))}, re-derived {_short(b.get(k))}" for k in fields
             if k != "seal"]
    return "; ".join(parts) or "only the seal differs"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["APPROVED", "Window", "check_answers", "check_chains", "check_completeness",
           "check_replays", "check_settlements", "compare_rederived", "dedupe"]
