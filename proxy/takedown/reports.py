"""Transparency reports (DSA Art. 15 numbers) from the case rows and the audit log.

A report covers notices and cases received in [from, to] (whole days, UTC). Times are
nearest-rank percentiles in seconds. Formats: JSON, CSV (section,key,value rows), Markdown, and
a PNG chart.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from proxy.takedown.config import TakedownConfig
from proxy.takedown.views import overdue_reasons

ACTIONED = {"actioned", "published", "enforced", "restore_scheduled", "litigation_hold", "restored"}
PENDING = {"received", "validated", "under_review"}


def parse_range(start: str | None, end: str | None) -> tuple[dt.date, dt.date]:
    """`from` and `to` as dates, or a ValueError whose message names the parameters: a range
    that ends before it starts is an error, not an empty report."""
    days = []
    for name, text in (("from", start), ("to", end)):
        if not text:
            raise ValueError(f"{name}: required (YYYY-MM-DD)")
        try:
            days.append(dt.date.fromisoformat(text))
        except ValueError:
            raise ValueError(f"{name}: not a date (YYYY-MM-DD): {text!r}") from None
    if days[1] < days[0]:
        raise ValueError(
            f"from/to: the range is reversed: from {days[0].isoformat()} is after"
            f" to {days[1].isoformat()}"
        )
    return days[0], days[1]


def outcome(state: str) -> str:
    if state in ACTIONED:
        return "actioned"
    if state in PENDING:
        return "pending"
    return state  # rejected, withdrawn, incomplete, reversed


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return round(ordered[rank - 1], 6)


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "median_s": percentile(values, 50),
        "p95_s": percentile(values, 95),
    }


def build(
    conn: sqlite3.Connection, start: dt.date, end: dt.date, cfg: TakedownConfig, now: float
) -> dict[str, Any]:
    if end < start:
        raise ValueError(f"from/to: the range is reversed: from {start} is after to {end}")
    lo = dt.datetime.combine(start, dt.time(), dt.UTC).timestamp()
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
    span = (lo, hi)
    by_basis: dict[str, Counter[str]] = defaultdict(Counter)
    notices = trusted_notices = incomplete = 0
    for r in conn.execute(
        "SELECT n.legal_basis, n.complete, c.state, a.role FROM notices n"
        " LEFT JOIN cases c ON c.id = n.case_id LEFT JOIN accounts a ON a.id = n.account_id"
        " WHERE n.received_at >= ? AND n.received_at < ?",
        span,
    ):
        notices += 1
        trusted_notices += r["role"] == "trusted"
        incomplete += not r["complete"]
        basis = r["legal_basis"] or "unknown"
        by_basis[basis][outcome(r["state"]) if r["complete"] else "incomplete"] += 1
    rows = conn.execute(
        "SELECT * FROM cases WHERE received_at >= ? AND received_at < ?", span
    ).fetchall()
    d = cfg.deadlines
    to_decision = [r["decided_at"] - r["received_at"] for r in rows if r["decided_at"]]
    to_enforced = [
        r["enforced_at"] - r["decided_at"] for r in rows if r["enforced_at"] and r["decided_at"]
    ]
    cases_by_outcome = Counter(outcome(r["state"]) for r in rows)
    events = Counter(
        e for (e,) in conn.execute("SELECT event FROM audit_log WHERE at >= ? AND at < ?", span)
    )
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "generated_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
        "notices": {
            "total": notices,
            "incomplete": incomplete,
            "by_basis_and_outcome": {b: dict(c) for b, c in sorted(by_basis.items())},
        },
        "cases": {"total": len(rows), "by_outcome": dict(cases_by_outcome)},
        "trusted_submitters": {
            "notices": trusted_notices,
            "cases_actioned_automatically": sum(
                1 for r in rows if r["automated"] and r["decision"] == "action"
            ),
        },
        "times": {
            "receipt_to_decision": _stats(to_decision),
            "decision_to_enforced_all_edges": _stats(to_enforced),
        },
        "overdue": {
            "now": sum(1 for r in rows if overdue_reasons(r, now, cfg)),
            "decided_late": sum(1 for t in to_decision if t > d.decision_s),
            "enforced_late": sum(1 for t in to_enforced if t > d.enforcement_s),
            "edge_acks_overdue": events["edge_overdue"],
        },
        "counter_notices": {
            "received": conn.execute(
                "SELECT COUNT(*) FROM counter_notices WHERE received_at >= ? AND received_at < ?",
                span,
            ).fetchone()[0],
            "restores_scheduled": events["restore_scheduled"],
            "restored": events["restored"],
            "lawsuits": events["litigation_hold"],
        },
        "strikes": {
            "strikes": events["strike"],
            "tolled": events["strike_tolled"],
            "warnings": events["warning"],
            "suspensions": events["suspended"],
        },
        "redress": _redress(conn, span, events, rows),
    }


def _redress(
    conn: sqlite3.Connection,
    span: tuple[float, float],
    events: Counter[str],
    rows: list[sqlite3.Row],
) -> dict[str, Any]:
    """DSA Art. 15(1)(d): complaints and their outcomes; reversals, withdrawals after action
    and lifted suspensions, with the time from the undo to its removal on every edge."""
    outcomes = Counter(
        o or "open"
        for (o,) in conn.execute(
            "SELECT outcome FROM complaints WHERE received_at >= ? AND received_at < ?", span
        )
    )
    lifted = [r["lifted_at"] - r["ended_at"] for r in rows if r["ended_at"] and r["lifted_at"]]
    return {
        "complaints": sum(outcomes.values()),
        "complaints_upheld": outcomes["upheld"],
        "complaints_dismissed": outcomes["dismissed"],
        "complaints_open": outcomes["open"],
        "reversals": events["decision_reversed"],
        "withdrawals_after_action": sum(1 for r in rows if r["ended_by"] == "withdrawal"),
        "unsuspensions": events["unsuspended"],
        "undo_to_lifted_median_s": percentile(lifted, 50),
        "undo_to_lifted_p95_s": percentile(lifted, 95),
    }


def _flatten(prefix: str, value: Any, out: list[tuple[str, str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        section, _, key = prefix.partition(".")
        out.append((section, key, "" if value is None else str(value)))


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


def to_csv(report: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    _flatten("", report, rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "key", "value"])
    w.writerows(rows)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def to_markdown(report: dict[str, Any]) -> str:
    p = report["period"]
    lines = [
        f"# Takedown report {p['from']} – {p['to']}",
        "",
        f"Generated {report['generated_at']}.",
        "",
    ]
    bb = report["notices"]["by_basis_and_outcome"]
    outcomes = sorted({o for c in bb.values() for o in c})
    lines += [
        "## Notices by legal basis and outcome",
        "",
        "| basis | " + " | ".join(outcomes) + " | total |",
        "|---|" + "---|" * (len(outcomes) + 1),
    ]
    for basis, counts in bb.items():
        lines.append(
            f"| {basis} | "
            + " | ".join(str(counts.get(o, 0)) for o in outcomes)
            + f" | {sum(counts.values())} |"
        )
    lines += [
        "",
        f"Notices: {report['notices']['total']} (incomplete: {report['notices']['incomplete']}).",
        "",
    ]
    lines += ["## Times", "", "| interval | count | median (s) | p95 (s) |", "|---|---|---|---|"]
    for name, s in report["times"].items():
        lines.append(
            f"| {name.replace('_', ' ')} | {s['count']} | {_fmt(s['median_s'])} |"
            f" {_fmt(s['p95_s'])} |"
        )
    for section in ("trusted_submitters", "overdue", "counter_notices", "strikes", "redress"):
        lines += ["", f"## {section.replace('_', ' ').capitalize()}", "", "| | |", "|---|---|"]
        lines += [f"| {k.replace('_', ' ')} | {_fmt(v)} |" for k, v in report[section].items()]
    lines += ["", "## Audit log anchor", "", anchor_line(report.get("audit_anchor"))]
    return "\n".join(lines) + "\n"


def anchor_line(head: dict[str, Any] | None) -> str:
    """The latest signed head of the audit chain, to be kept with the report: a later rewrite
    of the log no longer matches it (`verify-log --head '<its JSON>'`)."""
    if not head:
        return "No signed head of the audit log was found."
    stamp = dt.datetime.fromtimestamp(float(head["at"]), dt.UTC).isoformat(timespec="seconds")
    return (
        f"Latest signed head: record {head['seq']}, hash `{head['hash']}`, signed {stamp} "
        f"by key `{head['key_id']}`, signature `{head['signature']}`.\n\n"
        f"```json\n{json.dumps(head, separators=(',', ':'))}\n```"
    )


def chart(report: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bb = report["notices"]["by_basis_and_outcome"]
    outcomes = sorted({o for c in bb.values() for o in c})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    bases = list(bb) or ["(none)"]
    bottom = [0] * len(bases)
    for o in outcomes:
        vals = [bb.get(b, {}).get(o, 0) for b in bases]
        ax1.bar(bases, vals, bottom=bottom, label=o)
        bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
    ax1.set_title("Notices by legal basis and outcome")
    ax1.set_ylabel("notices")
    if outcomes:
        ax1.legend()
    names = ["receipt→decision", "decision→enforced"]
    stats = [
        report["times"]["receipt_to_decision"],
        report["times"]["decision_to_enforced_all_edges"],
    ]
    xs = range(len(names))
    ax2.bar([x - 0.2 for x in xs], [s["median_s"] or 0 for s in stats], 0.4, label="median")
    ax2.bar([x + 0.2 for x in xs], [s["p95_s"] or 0 for s in stats], 0.4, label="p95")
    ax2.set_xticks(list(xs), names)
    ax2.set_ylabel("seconds")
    ax2.set_title("Time to action")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
