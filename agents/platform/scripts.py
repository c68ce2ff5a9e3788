"""A card's answer to its issuer's script, from the terminal to the issuer (pure).

The terminal reports ``IssuerScriptApplied`` (terminal MAC) on the payment's partition of
``cardbus.payment-requests``; the platform checks it belongs to a payment of that terminal that
it answered, and forwards it to the payment's issuer as ``IssuerScriptReported`` (platform
signature: the issuer reads only what the platform vouches for), keyed by the card's token.
"""

from __future__ import annotations

from agents.platform.decide import Out, Pending, Rejected, derived_id
from cardbus.crypto.hsm import PlatformHsm
from cardbus.errors import CryptoError
from schemas.base import header
from schemas.cardstatus import IssuerScriptApplied, IssuerScriptReported


def forward_result(ev: IssuerScriptApplied, pending: Pending | None,
                   hsm: PlatformHsm) -> Out:
    """The issuer's copy of a script result (``Rejected`` if it is forged or answers no
    payment of its terminal)."""
    try:
        hsm.verify_terminal_mac(ev.terminal_id, ev)
    except CryptoError as exc:
        raise Rejected(f"terminal MAC of {ev.type} {ev.event_id}: {exc}") from None
    if pending is None or pending.terminal_id != ev.terminal_id \
            or pending.request_event_id != ev.request_event_id \
            or pending.pan_token != ev.pan_token or pending.state != "answered":
        raise Rejected(f"{ev.type} {ev.event_id} answers no payment of {ev.terminal_id} "
                       f"the platform answered")
    report = hsm.sign_event(IssuerScriptReported(
        **header("platform", ev.correlation_id, ev.occurred_at,
                 event_id=derived_id("script-result", ev.event_id)),
        provider_id=pending.provider_id, pan_token=ev.pan_token, terminal_id=ev.terminal_id,
        report_event_id=ev.event_id, script=ev.script, sw=ev.sw))
    out = Out()
    out.add(f"provider:{pending.provider_id}", ev.pan_token, report)
    return out
