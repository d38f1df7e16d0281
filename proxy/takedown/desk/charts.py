"""The transparency report's charts as inline SVG, drawn on the server.

No script and no build step: the page works with JavaScript off and under a CSP without
'unsafe-inline' (presentation attributes, not style attributes). Every label is escaped.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

COLOURS = {
    "actioned": "#2f6f4f",
    "rejected": "#a23b3b",
    "pending": "#c98a1b",
    "incomplete": "#7a7a7a",
    "withdrawn": "#5a6fa8",
}
OTHER = "#8a5aa8"
W, H, PAD, LEGEND = 370, 240, 48, 82


def _scale(top: float) -> float:
    return (H - 2 * PAD) / top if top > 0 else 0.0


def stacked_bars(title: str, data: dict[str, dict[str, int]]) -> Markup:
    """One bar per group (legal basis), stacked by outcome."""
    groups = list(data) or ["(none)"]
    series = sorted({k for v in data.values() for k in v})
    top = max((sum(v.values()) for v in data.values()), default=0)
    k = _scale(top)
    bw = (W - LEGEND - PAD) / max(1, len(groups)) * 0.6
    parts = [_frame(title, top)]
    for i, g in enumerate(groups):
        x = PAD + (i + 0.2) * (W - LEGEND - PAD) / len(groups)
        y = float(H - PAD)
        for s in series:
            n = data.get(g, {}).get(s, 0)
            if n:
                h = n * k
                y -= h
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                    f'fill="{COLOURS.get(s, OTHER)}"><title>{escape(g)}: {escape(s)} {n}'
                    "</title></rect>"
                )
        parts.append(
            f'<text x="{x + bw / 2:.1f}" y="{H - PAD + 16}" text-anchor="middle">{escape(g)}</text>'
        )
    parts += _legend([(s, COLOURS.get(s, OTHER)) for s in series])
    return _svg(title, parts)


def paired_bars(title: str, rows: list[tuple[str, float | None, float | None]]) -> Markup:
    """Median and p95 side by side for each interval (seconds)."""
    top = max((v or 0.0 for _, a, b in rows for v in (a, b)), default=0.0)
    k = _scale(top)
    slot = (W - LEGEND - PAD) / max(1, len(rows))
    parts = [_frame(title, top, unit="s")]
    for i, (name, median, p95) in enumerate(rows):
        for j, (v, colour) in enumerate(((median, "#2f6f4f"), (p95, "#c98a1b"))):
            h = (v or 0.0) * k
            x = PAD + i * slot + slot * (0.15 + 0.35 * j)
            parts.append(
                f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{slot * 0.3:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)}: '
                f"{'–' if v is None else f'{v:.3f} s'}</title></rect>"
            )
        parts.append(
            f'<text x="{PAD + (i + 0.5) * slot:.1f}" y="{H - PAD + 16}" text-anchor="middle">'
            f"{escape(name)}</text>"
        )
    parts += _legend([("median", "#2f6f4f"), ("p95", "#c98a1b")])
    return _svg(title, parts)


def _frame(title: str, top: float, unit: str = "") -> str:
    return (
        f'<text x="{PAD}" y="20" class="chart-title">{escape(title)}</text>'
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - LEGEND}" y2="{H - PAD}" stroke="#444"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#444"/>'
        f'<text x="{PAD - 4}" y="{PAD + 4}" text-anchor="end">{_num(top)}{" " if unit else ""}{unit}</text>'
        f'<text x="{PAD - 4}" y="{H - PAD}" text-anchor="end">0</text>'
    )


def _num(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.2f}"


def _legend(items: list[tuple[str, str]]) -> list[str]:
    out = []
    for i, (name, colour) in enumerate(items):
        y = PAD + i * 18
        out.append(
            f'<rect x="{W - LEGEND + 10}" y="{y}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{W - LEGEND + 28}" y="{y + 10}">{escape(name)}</text>'
        )
    return out


def _svg(title: str, parts: list[str]) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg" font-size="11" '
        f'font-family="sans-serif">{body}</svg>'
    )


def report_charts(report: dict[str, Any]) -> list[Markup]:
    """Notices by basis and outcome; each interval on its own scale (a 15-minute decision
    beside a sub-second enforcement would leave the second bar invisible on one axis)."""
    times = report["times"]
    out = [
        stacked_bars(
            "Notices by legal basis and outcome", report["notices"]["by_basis_and_outcome"]
        )
    ]
    for key, title in (
        ("receipt_to_decision", "Receipt → decision (s)"),
        ("decision_to_enforced_all_edges", "Decision → enforced on every edge (s)"),
    ):
        s = times[key]
        out.append(paired_bars(title, [(f"{s['count']} cases", s["median_s"], s["p95_s"])]))
    return out
