"""The platform as card-application manager: what an issuer allows on its cards, and the
GlobalPlatform session script for a request (pure; no Kafka, no keys).

An issuer gives the platform its security-domain master key (TR-31, ``PlatformHsm.
accept_key_block``) and a policy: which applications from the platform's catalogue may be
installed on its cards, and whether card management may lock or delete applications or lock
the card. ``script_for`` checks a request against the policy and gives the ``Script`` that
``cardbus.gp.session`` runs through the terminal; ``CardManagementRefused`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cardbus.crypto import scp03
from cardbus.errors import CardManagementRefused
from cardbus.gp import session
from cardbus.gp.card import TRANSIT_LOAD_FILE, LoadFile


@dataclass(frozen=True)
class AppTemplate:
    """An application the platform can put onto cards: its code on the card (load file), the
    instance AID it gets, and the provider that personalises it."""

    name: str
    load_file: LoadFile
    instance: bytes
    provider: str


CATALOGUE: Mapping[str, AppTemplate] = {
    "transit": AppTemplate("transit", TRANSIT_LOAD_FILE, bytes.fromhex("A000000632010105"),
                           "transit"),
}


@dataclass(frozen=True)
class IssuerPolicy:
    """What an issuer lets the platform do to its cards."""

    issuer: str
    installable: frozenset[str] = frozenset()
    may_lock_apps: bool = True
    may_delete_apps: bool = True
    may_lock_card: bool = False
    protected: frozenset[bytes] = field(default_factory=frozenset)  # e.g. its payment app

    def allows(self, template: str) -> bool:
        return template in self.installable


# -- requests --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListApps:
    """What is on the card."""


@dataclass(frozen=True)
class InstallApp:
    """Install a catalogue application, personalised with ``personalisation`` (None while its
    provider has not prepared it: the policy is checked before it is asked for)."""

    template: str
    personalisation: session.PursePersonalisation | None = None


@dataclass(frozen=True)
class LockApp:
    instance: bytes
    lock: bool = True


@dataclass(frozen=True)
class DeleteApp:
    instance: bytes


@dataclass(frozen=True)
class LockCard:
    lock: bool = True


Request = ListApps | InstallApp | LockApp | DeleteApp | LockCard


def _refuse(policy: IssuerPolicy, what: str) -> CardManagementRefused:
    return CardManagementRefused(f"issuer {policy.issuer} does not allow {what}")


def _operation(policy: IssuerPolicy, request: Request,
               catalogue: Mapping[str, AppTemplate]) -> session.Operation:
    """The session operation for one request, if the policy allows it."""
    if isinstance(request, ListApps):
        return session.ListContent()
    if isinstance(request, InstallApp):
        template = catalogue.get(request.template)
        if template is None:
            raise CardManagementRefused(f"no application {request.template!r} in the catalogue")
        if not policy.allows(template.name):
            raise _refuse(policy, f"installing {template.name}")
        return session.InstallApp(template.load_file, template.instance, request.personalisation)
    if isinstance(request, LockCard):
        if not policy.may_lock_card:
            raise _refuse(policy, "locking its cards")
        return session.LockCard(request.lock)
    aid = request.instance
    if aid in policy.protected:
        raise _refuse(policy, f"changing application {aid.hex().upper()}")
    if isinstance(request, LockApp):
        if not policy.may_lock_apps:
            raise _refuse(policy, "locking applications")
        return session.LockApp(aid, request.lock)
    if not policy.may_delete_apps:
        raise _refuse(policy, "deleting applications")
    return session.DeleteApp(aid)


INSTALL_LEVEL = scp03.Level.C_MAC | scp03.Level.C_DECRYPTION
"""The least an install runs at: its STORE DATA carry the purse's number and keys."""


def script_for(policy: IssuerPolicy, requests: tuple[Request, ...], *,
               catalogue: Mapping[str, AppTemplate] = CATALOGUE,
               list_after: bool = True, level: int = session.Script.level) -> session.Script:
    """The session script for ``requests`` on a card of ``policy.issuer`` (a listing at the
    end unless ``list_after`` is off, so the outcome shows the card as it is now). An install
    needs C-MAC and C-DECRYPTION at least."""
    ops = [_operation(policy, r, catalogue) for r in requests]
    if any(isinstance(op, session.InstallApp) for op in ops) and \
            level & INSTALL_LEVEL != INSTALL_LEVEL:
        raise CardManagementRefused(f"an install needs C-MAC and C-DECRYPTION, not level "
                                    f"{level:#04x}")
    if list_after and not any(isinstance(op, session.ListContent) for op in ops):
        ops.append(session.ListContent())
    return session.Script(tuple(ops), level)
