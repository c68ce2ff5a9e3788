"""A local CardBus on one machine: every party's sealed key store, and the key ceremonies.

``setup()`` is what a real deployment does with key ceremonies and HSM initialisation, done
for one machine: storage keys for the platform and each provider (0600 files), their key
stores (identity keys, issuer keys), a KBPK shared between the platform and each provider,
and the platform's public identity in the directory. It is idempotent: an existing key is never
replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cardbus import vault
from cardbus.crypto.hsm import PlatformHsm, ProviderHsm
from cardbus.crypto.keys import KeyAlg, new_key


@dataclass
class SetupReport:
    """What ``setup`` created (names only)."""

    created: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)


def platform_hsm(home: Path | None = None) -> PlatformHsm:
    """The platform's HSM over its file key store (for tools; workers add their tables)."""
    return PlatformHsm(vault.FileKeyStore("platform", home))


def provider_hsm(provider_id: str, home: Path | None = None) -> ProviderHsm:
    """A provider's HSM over its file key store."""
    return ProviderHsm(provider_id, vault.FileKeyStore(f"provider-{provider_id}", home))


def setup(home: Path | None, providers: list[str]) -> SetupReport:
    """Create (once) every local party's keys and run the KBPK ceremonies."""
    report = SetupReport()
    ids = list(providers)
    if vault.create("platform", home):
        report.created.append("platform storage key")
    pks = vault.FileKeyStore("platform", home)
    platform = PlatformHsm(pks)
    for pid in ids:
        party = f"provider-{pid}"
        if vault.create(party, home):
            report.created.append(f"{pid} storage key")
        store = vault.FileKeyStore(party, home)
        provider = ProviderHsm(pid, store)
        if f"kbpk:{pid}" not in pks or f"kbpk:{pid}" not in store:
            kbpk = new_key(KeyAlg.AES, 32)
            platform.import_provider_kbpk(pid, kbpk)
            provider.import_kbpk(kbpk)
            report.created.append(f"{pid} KBPK (shared with the platform)")
        store.save()
        report.providers.append(pid)
    pks.save()
    vault.publish_identity("platform", platform.verifier, home)
    return report
