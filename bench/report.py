"""The benchmark's report: every figure as text, and a PNG chart (matplotlib, ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _lat(lat: dict[str, Any] | None) -> str:
    if not lat:
        return "-"
    return (f"p50 {lat['p50']:.0f} / p95 {lat['p95']:.0f} / p99 {lat['p99']:.0f} / "
            f"max {lat['max']:.0f} ms")


LIFT = [
    "what limits it: CPU. Each payment costs several ms of CPU across the platform (2 events",
    "  in, 2 out, 3 changelog writes), its bank (1 in, 1 out, 3 changelog writes, the card",
    "  record carrying up to 64 recent decisions), the broker and the load generator, on 2",
    "  shared cores (the 'limit' lines above); Faust's per-event machinery (stream, acks, the",
    "  consumer thread hand-off, one produce call per record) is most of it, the crypto about a",
    "  tenth. What would lift it: batch processing (stream.take) so one state write and one",
    "  produce request serve many events, fewer changelog writes per payment (the platform's",
    "  outcome inside its pending record), and more cores: 2 workers per stage only help when",
    "  the cores are not already full."]


def text(r: dict[str, Any]) -> str:
    """Every figure of a benchmark result, one line each."""
    m, raw = r["machine"], r["raw_single_hop"]
    lines = [f"cardbus bench pipeline on {m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB, "
             f"{m['os']}, Python {m['python']}; load average at start "
             f"{m['load_average_at_start']}; broker {r['broker']}",
             f"raw single hop (1 producer process, 1 consumer process, {raw['partitions']} "
             f"partitions, {raw['message_bytes']} B, acks=all, idempotent, linger "
             f"{raw['linger_ms']} ms): {raw['msgs_per_s']:,.0f} msgs/s "
             f"(producer alone {raw['producer_msgs_per_s']:,.0f}/s)"]
    for run in r["runs"]:
        lines.append(f"\n[{run['label']}]")
        if "error" in run:
            lines.append(f"  FAILED: {run['error']} (log {run['log']})\n{run['tail']}")
            continue
        lines.append(f"  setup {run['setup_seconds']} s ({run['terminals']} terminals, "
                     f"{run['cards']} cards); requests pre-generated in "
                     f"{run.get('pregenerate_seconds', 0)} s (real ARQCs, PIN blocks, MACs)")
        mx = run["max"]
        lines.append(f"  closed loop (window {run['window']}): {mx['payments_per_s']:,.1f} "
                     f"payments/s ({mx['answered']}/{mx['sent']} in {mx['seconds']} s); "
                     f"latency {_lat(mx['latency_ms'])}")
        for ol in run.get("open_loop", []):
            lines.append(f"  open loop {ol['fraction']:.0%} ({ol['offered_per_s']:,.1f}/s "
                         f"offered): {ol['payments_per_s']:,.1f}/s answered; "
                         f"latency {_lat(ol['latency_ms'])}")
        for name, u in run["processes"].items():
            peak = run.get("peak_rss_mib", {}).get(name, u["peak_rss_mib"])
            lines.append(f"  {name:<16} CPU {u['cpu_percent']:6.1f}% of one core "
                         f"(closed loop)  peak RSS {peak:7.1f} MiB")
        lim = run.get("limit")
        if lim:
            costs = ", ".join(f"{k} {v:.2f}" for k, v in lim["cpu_ms_per_payment"].items())
            lines.append(f"  limit: {lim['bound']}-bound; the processes used "
                         f"{lim['cpu_share_of_cores']:.0%} of the cores; CPU ms per payment: "
                         f"{costs} (total {lim['cpu_ms_per_payment_total']:.2f} -> the cores "
                         f"carry at most ~{lim['cpu_ceiling_payments_per_s']:,.0f}/s); hottest "
                         f"{lim['hottest']}")
        lines.append(f"  consumer lag at the end: {run['consumer_lag']}")
        acc = run["accounting"]
        lines.append(f"  accounting: {acc['requests']} requests, {acc['results']} results, "
                     f"lost {acc['lost']}, duplicated {acc['duplicated']}, unexpected "
                     f"{acc['unexpected']}, codes {acc['response_codes']}; approved "
                     f"{acc['approved_minor_units']} vs settled {acc['ledger_minor_units']}"
                     f" -> {'OK' if acc['ok'] else 'FAILED'}")
        prof = run.get("profile")
        if prof:
            lines.append(f"  profile of {prof['process']} (py-spy, "
                         f"{prof.get('samples', 0)} samples, "
                         f"{prof.get('payments_per_s_while_profiling', 0)} payments/s):")
            if "error" in prof:
                lines.append(f"    {prof['error']}")
            for name, pct in prof.get("self_percent", [])[:12]:
                lines.append(f"    self {pct:5.1f}%  {name}")
            for name, pct in prof.get("inclusive_percent_own_code", [])[:15]:
                lines.append(f"    incl {pct:5.1f}%  {name}")
    t = r["targets"]
    lines += ["",
              f"pipeline {r['pipeline_payments_per_s']:,.1f} payments/s (1 worker/stage), best "
              f"{r['best_payments_per_s']:,.1f}/s = {r['pipeline_vs_raw_percent']}% of the raw "
              f"single hop; latency at max {_lat(r['latency_ms'])}; at 50% "
              f"{_lat(r['latency_at_50pct_ms'])}",
              "targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in t.items()),
              *([] if all(t.values()) else LIFT),
              f"lost {r['lost']}, duplicated {r['duplicated']}, ledgers "
              f"{'balance' if r['ledgers_balance'] else 'DO NOT balance'} -> "
              f"{'OK' if r['ok'] else 'FAILED'}"]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """Throughput per configuration beside the raw hop; latency percentiles per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [x for x in r["runs"] if "error" not in x]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["raw hop (msgs/s)"] + [x["label"] for x in runs]
    values = [r["raw_single_hop_msgs_per_s"]] + [x["max"]["payments_per_s"] for x in runs]
    a.barh(names, values, color=["grey"] + ["tab:blue"] * len(runs))
    a.set_xscale("log")
    a.set_xlabel("per second (log)")
    a.set_title("throughput")
    phases = []
    if runs:
        phases = [("max", runs[0]["max"])] + [(f"{p['fraction']:.0%}", p)
                                              for p in runs[0].get("open_loop", [])]
    for q in ("p50", "p95", "p99", "max"):
        b.plot([n for n, _ in phases], [p["latency_ms"][q] for _, p in phases], marker="o",
               label=q)
    b.set_yscale("log")
    b.set_ylabel("request -> result, ms (log)")
    b.set_title("latency, 1 worker/stage")
    b.legend()
    m = r["machine"]
    fig.suptitle(f"cardbus bench pipeline: {m['cores']} cores, {m['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
