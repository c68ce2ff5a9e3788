"""The audit report on a terminal (rich): counts, what was checked, findings, verdict."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from audit.model import AuditReport

MAX_ROWS = 200


def _counts(title: str, items: dict[str, int], *, key: str = "", value: str = "") -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column(key)
    table.add_column(value, justify="right")
    for k, v in sorted(items.items()):
        table.add_row(str(k), f"{v:,}")
    return table


def render(report: AuditReport, console: Console | None = None) -> None:
    """Print ``report``."""
    out = console or Console()
    out.rule(f"CardBus audit of namespace {report.namespace}")
    out.print(f"{report.events_read:,} events read and checked in {report.seconds:.2f} s")
    out.print(_counts("Events per topic", dict(report.per_topic), key="topic", value="events"))
    out.print(_counts("Checks", dict(report.checks), key="check", value="count"))
    if report.response_codes:
        out.print(_counts("Payment outcomes (response code)", dict(report.response_codes),
                          key="code", value="payments"))
    for provider, counts in sorted(report.per_provider.items()):
        out.print(_counts(f"Decisions of {provider}", dict(counts), key="", value=""))
    for provider, ledger in sorted(report.ledger.items()):
        shown = {k: v for k, v in ledger.items() if not isinstance(v, list)}
        out.print(_counts(f"Recomputed ledger of {provider} (minor units)", shown))
    if report.not_checked:
        out.print(_counts("Not checked", dict(report.not_checked), key="why", value="events"))
    for note in report.notes:
        out.print(f"[yellow]note:[/] {note}")
    if report.dead_letters:
        table = Table(title=f"Dead letters ({len(report.dead_letters)}, listed, not failures)",
                      title_justify="left", show_edge=False)
        for col in ("where", "original", "code", "reason"):
            table.add_column(col)
        for d in report.dead_letters[:MAX_ROWS]:
            table.add_row(f"{d.topic}/{d.partition}@{d.offset}", d.original, d.error_code,
                          d.reason[:120])
        out.print(table)
    if report.findings:
        table = Table(title=f"Findings ({len(report.findings)})", title_justify="left",
                      show_edge=False)
        for col in ("kind", "topic/partition@offset", "reason"):
            table.add_column(col)
        for f in report.findings[:MAX_ROWS]:
            table.add_row(f.kind, f"{f.topic}/{f.partition}@{f.offset}", f.reason)
        out.print(table)
        if len(report.findings) > MAX_ROWS:
            out.print(f"... and {len(report.findings) - MAX_ROWS} more (use --json)")
        out.print(f"[bold red]AUDIT FAILED[/]: {len(report.findings)} finding(s)")
    else:
        out.print("[bold green]AUDIT CLEAN[/]: no findings")
