"""results.json, results.md (Markdown tables) and PNG charts from one benchmark session."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

HANDSHAKE_SCENARIOS = ("tls-new", "tls-resume")


def versions() -> dict[str, str]:
    probes = {
        "wrk": ["wrk", "--version"],
        "nginx": ["nginx", "-v"],
        "openssl": ["openssl", "version"],
        "varnish": ["varnishd", "-V"],
        "trafficserver": ["traffic_server", "--version"],
    }
    found: dict[str, str] = {}
    for name, argv in probes.items():
        if shutil.which(argv[0]) is None:
            continue
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = (out.stdout + out.stderr).strip().splitlines()
        found[name] = text[0][:120] if text else "?"
    return found


def _group(runs: list[Any]) -> dict[str, dict[str, list[Any]]]:
    grouped: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run.scenario][run.target].append(run)
    return grouped


def summarise(runs: list[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per scenario and target: medians over rounds, and the per-round ratio to the edge."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario, by_target in _group(runs).items():
        edge = (
            "edgeproxy"
            if "edgeproxy" in by_target
            else next((t for t in by_target if t.startswith("edgeproxy")), "")
        )  # big-set's edge is "edgeproxy-big"
        edge_rounds = {r.round: r for r in by_target.get(edge, [])}
        rows: dict[str, dict[str, Any]] = {}
        for target, target_runs in by_target.items():
            ratios = [
                r.measured.rps / edge_rounds[r.round].measured.rps
                for r in target_runs
                if r.round in edge_rounds and edge_rounds[r.round].measured.rps
            ]
            rows[target] = {
                "rounds": len(target_runs),
                "rps": statistics.median(r.measured.rps for r in target_runs),
                "p50_us": statistics.median(r.measured.p50_us for r in target_runs),
                "p99_us": statistics.median(r.measured.p99_us for r in target_runs),
                "cpu_us_per_req": statistics.median(r.cpu_us_per_req for r in target_runs),
                "ratio_rps_to_edge_per_round": [round(x, 3) for x in ratios],
                "requests": sum(r.measured.requests for r in target_runs),
                "errors": sum(r.measured.errors for r in target_runs),
                "unexpected_status": sum(r.measured.unexpected for r in target_runs),
                "origin_requests": sum(r.origin_requests for r in target_runs),
                "tool": target_runs[0].measured.tool,
            }
        summary[scenario] = rows
    return summary


def write(out: Path, meta: dict[str, Any], runs: list[Any], extra: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    data = {
        "meta": meta,
        "summary": summary,
        "runs": [{**asdict(r), "measured": asdict(r.measured)} for r in runs],
        **extra,
    }
    paths = [out / "results.json", out / "results.md"]
    paths[0].write_text(json.dumps(data, indent=2, default=str) + "\n")
    paths[1].write_text(markdown(meta, summary, extra))
    paths += charts(out, summary)
    return paths


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def markdown(meta: dict[str, Any], summary: dict[str, Any], extra: dict[str, Any]) -> str:
    s = meta["settings"]
    tool = "wrk" if s["use_wrk"] else "bundled Python load generator (LESS PRECISE than wrk)"
    lines = [
        f"# Benchmark results, {meta['date_utc']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Load: {tool}, {s['connections']} connections, {s['rounds']} rounds × "
        f"{s['duration_s']:g} s per target, targets alternated round by round; "
        f"{s['workers']} workers per server.  ",
        f"Machine: {meta['machine']['cpus']} CPUs, {meta['machine']['platform']}, "
        f"Python {meta['machine']['python']}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "  ",
    ]
    if meta["unavailable"]:
        lines.append(
            "Not run: " + "; ".join(f"{k} ({v})" for k, v in meta["unavailable"].items()) + "  "
        )
    for note in meta["notes"]:
        lines.append(f"Note: {note}  ")
    lines += [
        "",
        "Figures are medians over rounds. *CPU/req* is the server's CPU time (all its processes, "
        "from /proc) over the run divided by the requests served. *vs edge* is the target's req/s "
        "divided by edgeproxy's in the same round. *origin* counts requests that reached the "
        "origin during the measured runs (0 for a true hit load).",
    ]
    for scenario, rows in summary.items():
        lines += [
            "",
            f"## {scenario}",
            "",
            "| target | req/s | p50 ms | p99 ms | µs CPU/req | vs edge (per round) | errors | "
            "bad status | origin |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        if scenario in HANDSHAKE_SCENARIOS:
            lines[-2:-2] = [
                "Here a request is a handshake: *req/s* is handshakes/s, *CPU/req* the server's "
                "CPU per handshake (`openssl s_time`, no latencies); *bad status* counts "
                "handshakes that were not resumed (tls-resume).",
                "",
            ]
        for target, row in rows.items():
            ratios = ", ".join(f"{x:.2f}" for x in row["ratio_rps_to_edge_per_round"]) or "–"
            lines.append(
                f"| {target} | {row['rps']:,.0f} | {_ms(row['p50_us'])} | {_ms(row['p99_us'])} | "
                f"{row['cpu_us_per_req']:.1f} | {ratios} | {row['errors']} | "
                f"{row['unexpected_status']} | {row['origin_requests']} |"
            )
        if scenario == "blocklist-size" and "edgeproxy" in rows:
            base = rows["edgeproxy"]["cpu_us_per_req"] or 1.0
            memory = extra.get("memory", {})
            split = extra.get("memory_split", {})
            lines += ["", "| target | µs CPU/req vs no blocklist | RSS (all processes) | "
                      "PSS | anonymous |", "|---|---:|---:|---:|---:|"]  # fmt: skip
            for target, row in rows.items():
                delta = (row["cpu_us_per_req"] / base - 1) * 100
                rss = memory.get(target)
                rss_text = f"{rss / 2**20:,.0f} MiB" if rss else "–"
                m = split.get(target, {})
                pss, anon = (f"{m[k] / 2**20:,.0f} MiB" if m else "–" for k in ("pss", "anon"))
                lines.append(f"| {target} | {delta:+.1f}% | {rss_text} | {pss} | {anon} |")
    drop = extra.get("apply_drop")
    if drop and "windows" in drop:
        lines += ["", *_drop_lines(drop)]
    push = extra.get("push_enforce")
    if push:
        lines += [
            "",
            f"## push-enforce ({push['pushes']} pushes, {push['failures']} failed, "
            f"{push.get('list_entries', 0):,} entries listed)",
            "",
            "| measure | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|",
            f"| POST to its answer (all workers enforce) | {push['ack_ms']['p50']:.1f} | "
            f"{push['ack_ms']['p99']:.1f} | {push['ack_ms']['max']:.1f} |",
            f"| POST to the first 451 seen by a client | {push['enforced_ms']['p50']:.1f} | "
            f"{push['enforced_ms']['p99']:.1f} | {push['enforced_ms']['max']:.1f} |",
            "",
            f"Listed responses served after the push answered: {push['served_after_ack']} "
            "(8 fresh-connection probes per push).",
        ]
    soak = extra.get("soak")
    if soak:
        minutes = soak["settings"]["soak_s"] / 60
        lines += ["", f"## soak ({minutes:g} minutes)", "", soak["table"]]
    lines += _node_tier_sections(extra)
    lines += _tail_sections(extra)
    if fleet := extra.get("fleet"):
        from benchmarks.fleet import table

        lines += ["", "## fleet", "", table(fleet)]
    return "\n".join(lines) + "\n"


def _tail_sections(extra: dict[str, Any]) -> list[str]:
    """Issue 18: per round, who waited for a core, and inside the edge, how long (tail.py)."""
    from benchmarks.tail import table

    lines: list[str] = []
    for scenario, rows in extra.get("tail", {}).items():
        lines += [
            "",
            f"### {scenario}: where the tail waits",
            "",
            "Run-queue wait: time the processes were runnable but not running (schedstat). The "
            "edge's columns are per worker (`/metrics`, proxy/node/tail.py), bucket upper bounds.",
            "",
            table(rows),
        ]
    return lines


def _node_tier_sections(extra: dict[str, Any]) -> list[str]:
    """Issue 11: origin requests per URL, node-hit's ratio, the restart."""
    from benchmarks.node_tier import node_hit_table, restart_table

    lines: list[str] = []
    for scenario, totals in extra.get("origin_totals", {}).items():
        if not totals["urls"]:
            continue
        lines += [
            "",
            f"### {scenario}: origin requests per URL, priming included "
            f"({totals['urls']:,} URLs requested; goal for the edge: 1.00)",
            "",
            "| target | origin requests | per URL |",
            "|---|---:|---:|",
        ]
        for target, n in totals["targets"].items():
            lines.append(f"| {target} | {n:,} | {n / totals['urls']:.2f} |")
    if node_hit := extra.get("node_hit"):
        lines += ["", f"## node-hit ({node_hit['objects']:,} objects of 4 KiB)", ""]
        lines.append(node_hit_table(node_hit))
    if restart := extra.get("restart"):
        lines += ["", "## restart", "", restart_table(restart)]
    return lines


def charts(out: Path, summary: dict[str, dict[str, dict[str, Any]]]) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    scenarios = [s for s in summary if summary[s]]
    if not scenarios:
        return []
    targets: list[str] = []
    for rows in summary.values():
        targets += [t for t in rows if t not in targets]
    made = []
    for key, label, name in (
        ("rps", "requests per second (median)", "rps.png"),
        ("cpu_us_per_req", "µs of server CPU per request (median)", "cpu_per_request.png"),
    ):
        fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(scenarios)), 4.5))
        width = 0.8 / max(1, len(targets))
        for i, target in enumerate(targets):
            xs, ys = [], []
            for j, scenario in enumerate(scenarios):
                row = summary[scenario].get(target)
                if row is not None:
                    xs.append(j + (i - (len(targets) - 1) / 2) * width)
                    ys.append(row[key])
            ax.bar(xs, ys, width, label=target)
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def _drop_lines(r: dict[str, Any]) -> list[str]:
    """apply-under-load (`benchmarks.blocklist_scale.drop`): every 1 s window of the hit load
    that overlaps the swap against the idle runs before the drop and after the last swap."""
    before = [w for w in r["windows"][1:] if w["t_s"] + 1.0 <= 0]
    end = max(r["enforced_s"] or 0.0, r["applied_s"] or 0.0)
    during = [w for w in r["windows"] if w["t_s"] + 1.0 > 0 and w["t_s"] < end]
    median_p99 = statistics.median(w["p99_ms"] for w in before) if before else 0.0
    idle_rps = statistics.median(w["rps"] for w in before) if before else 0.0
    run = r.get("idle_run") or {"rps": idle_rps, "p99_ms": median_p99}
    runs = [run, *([r["idle_after"]] if "idle_after" in r else [])]
    # idle p99: the mean of the idle runs (before the drop, and after the swap when measured),
    # each the p99 of all its requests
    idle_p99 = statistics.mean(x["p99_ms"] for x in runs)
    how = (
        f"with their signer's table, {r['table_install']}"
        if r["shipped"]
        else "compiled by the node"
    )
    lines = [
        f"## apply-under-load ({r['entries']:,} entries, {how}: 451 after "
        f"{r['enforced_s']:.1f} s, every worker swapped after {r['applied_s']:.1f} s)",
        "",
        "| window (s from the drop) | req/s | vs idle | p99 ms | vs idle |",
        "|---|---:|---:|---:|---:|",
        *(f"| idle ({when}, one run of {len(before)} s) | {x['rps']:,.0f} | | "
          f"{x['p99_ms']:.2f} | {x['p99_ms'] / (idle_p99 or 1):.2f} |"
          for when, x in zip(("before the drop", "after the swap"), runs, strict=False)),
        f"| idle (median of {len(before)} windows before) | {idle_rps:,.0f} | 1.00 | "
        f"{median_p99:.2f} | {median_p99 / (idle_p99 or 1):.2f} |",
    ]  # fmt: skip
    for w in during:
        lines.append(
            f"| {w['t_s']:+.1f} | {w['rps']:,} | {w['rps'] / (idle_rps or 1):.2f} | "
            f"{w['p99_ms']:.2f} | {w['p99_ms'] / (idle_p99 or 1):.2f} |"
        )
    cpu_s = ", ".join(f"{k} {v:.2f}" for k, v in r.get("cpu_s", {}).items())
    lines += ["", f"Errors: {r['errors']}. CPU seconds from the drop to the last swap: {cpu_s}."]
    return lines
