"""Cases on a terminal and in documents: `edgeproxy takedown cases` and `takedown case`.

    cases  the triage list (`GET /cases` read from the database): targets, complainant, works,
           the deadline that runs out first and the seconds left (negative: overdue);
           --state (repeatable or comma-separated), --sort deadline, --overdue, --format json
    case   one case's record; --format md renders its full timeline (every event with its
           time, actor and data, the edges' acknowledgements, the notifications delivered) as
           the Markdown kept in docs/takedown-timeline.md

Both read the SQLite file directly (WAL lets them run beside the service) and write nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from proxy.takedown import config, views
from proxy.takedown.states import State
from proxy.takedown.store import Store


def add_commands(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = cmds.add_parser("cases", help="the triage list: targets, parties, deadline clock")
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    p.add_argument(
        "--state", action="append", default=[], help="only cases in this state (repeatable, a,b)"
    )
    p.add_argument("--sort", choices=views.SORTS, default="id", help="id (default) or deadline")
    p.add_argument("--overdue", action="store_true", help="only cases past a deadline")
    p.add_argument("--format", choices=["table", "json"], default="table", help="default table")
    p.add_argument("--config", help="takedown TOML config (for the deadlines)")
    p.set_defaults(takedown_fn=_cases)

    p = cmds.add_parser("case", help="one case's record and timeline")
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    p.add_argument("--case", type=int, required=True, help="the case number")
    p.add_argument("--format", choices=["json", "md"], default="json", help="default json")
    p.add_argument("--config", help="takedown TOML config (for the deadlines)")
    p.set_defaults(takedown_fn=_case)


def _cases(args: argparse.Namespace) -> int:
    states = [s for arg in args.state for s in arg.split(",") if s]
    unknown = [s for s in states if s not in {x.value for x in State}]
    if unknown:
        print(f"cases: --state: unknown {', '.join(unknown)}", file=sys.stderr)
        return 2
    cfg = config.load(args.config)
    store = Store(args.db)
    try:
        rows = store.run_sync(
            lambda conn: views.list_cases(
                conn,
                time.time(),
                cfg,
                overdue_only=args.overdue,
                state=states or None,
                sort=args.sort,
            )
        )
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps({"cases": rows, "count": len(rows)}, indent=2))
    else:
        sys.stdout.write(table(rows))
    return 0


def _clock(c: dict[str, Any]) -> str:
    if c["deadline"] is None:
        return "-"
    left = float(c["seconds_left"])
    span = _span(abs(left))
    return f"{c['deadline']} {'OVERDUE ' + span if left < 0 else 'in ' + span}"


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def table(rows: list[dict[str, Any]]) -> str:
    """Fixed columns an operator scans: case, state, clock, complainant, works, targets."""
    head = ("case", "state", "deadline", "complainant", "works", "targets")
    lines = [head]
    for c in rows:
        who = ", ".join(str(p.get("name") or p.get("email") or "?") for p in c["complainants"])
        lines.append(
            (
                str(c["id"]),
                c["state"],
                _clock(c),
                who or "-",
                "; ".join(c["works"]) or "-",
                " ".join(c["targets"]) or "-",
            )
        )
    widths = [min(40, max(len(r[i]) for r in lines)) for i in range(len(head) - 1)]
    out = []
    for r in lines:
        cells = [r[i][:40].ljust(widths[i]) for i in range(len(widths))] + [r[-1]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def _case(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    store = Store(args.db)
    try:
        view = store.run_sync(views.case_view, args.case, time.time(), cfg)
    finally:
        store.close()
    if view is None:
        print(f"case: no case {args.case}", file=sys.stderr)
        return 1
    if args.format == "md":
        sys.stdout.write(markdown(view))
    else:
        print(json.dumps(view, indent=2))
    return 0


def _at(t: float | None, t0: float) -> str:
    if t is None:
        return "–"
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
    return f"{stamp} (+{t - t0:.3f} s)"


def markdown(view: dict[str, Any]) -> str:
    """A case's full record as Markdown: summary, edges, then every audit event in order."""
    t0 = float(view["received_at"])
    lines = [
        f"# Case {view['id']}: {view['state']}",
        "",
        f"- decision: {view['decision']} ({view['decision_reason']})",
        f"- targets: {', '.join(t['value'] or t['kind'] or '?' for t in view['targets'])}",
        f"- received {_at(view['received_at'], t0)}, decided {_at(view['decided_at'], t0)},"
        f" enforced on every edge {_at(view['enforced_at'], t0)}",
    ]
    ended = view.get("ended")
    if ended:
        lines.append(
            f'- ended by {ended["by"]} {_at(ended["at"], t0)} ("{ended["statement"]}"),'
            f" lifted on every edge {_at(ended['lifted_at'], t0)}"
        )
    lines += [
        "",
        "## Edges",
        "",
        "| publication | edge | version | acknowledged |",
        "|---|---|---|---|",
    ]
    for name, rows in (("block", view["edges"]), ("lift", view.get("lift_edges") or [])):
        for e in rows:
            lines.append(f"| {name} | {e['edge']} | {e['version']} | {_at(e['enforced_at'], t0)} |")
    lines += ["", "## Timeline", "", "| # | time | event | actor | data |", "|---|---|---|---|---|"]
    for e in view["timeline"]:
        data = json.dumps(e["data"], ensure_ascii=False, separators=(", ", ": "))
        data = data.replace("|", "\\|")
        lines.append(
            f"| {e['seq']} | {_at(e['at'], t0)} | {e['event']} | {e['actor']} | `{data}` |"
        )
    return "\n".join(lines) + "\n"
