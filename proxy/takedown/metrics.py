"""The takedown service's Prometheus metrics, declared in one place, children bound once.

Counters and the histogram are updated where things happen (publisher, sender); the gauges
that describe the database (notices by state, overdue cases) are read from it at scrape time,
so they are right after a restart. Each service has its own registry (tests run several).

Label values are bounded by construction: `state` and `reason` are enums of the service,
`channel` and `kind` are those of `notify.py`, `edge` is one of the configured edges.
"""

from __future__ import annotations

import sqlite3
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.takedown.config import TakedownConfig
from proxy.takedown.notify import Channel, Kind
from proxy.takedown.rejected import ROUTES, counts
from proxy.takedown.states import State
from proxy.takedown.views import open_complaints, overdue_reasons

OVERDUE = ("decision", "enforcement", "restore", "lift", "complaint", "unsuspension")
# Seconds from decision to the last edge's acknowledgement; the legal target is minutes.
ENFORCEMENT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


class ServiceMetrics:
    def __init__(self, edges: Sequence[str]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        notices = Gauge(
            "edgeproxy_takedown_notices",
            "Notices received, by the state of the case they are on",
            ["state"],
            registry=r,
        )
        self.notices = {s: notices.labels(state=s.value) for s in State}
        overdue = Gauge(
            "edgeproxy_takedown_overdue_cases",
            "Cases past a deadline right now, by the deadline",
            ["reason"],
            registry=r,
        )
        self.overdue = {x: overdue.labels(reason=x) for x in OVERDUE}
        rejected = Gauge(
            "edgeproxy_takedown_rejected_submissions",
            "Submissions refused as malformed (kept in rejected_submissions, no case), by route",
            ["route"],
            registry=r,
        )
        self.rejected = {x: rejected.labels(route=x) for x in ROUTES}
        failures = Counter(
            "edgeproxy_takedown_edge_delivery_failures",
            "Failed attempts to deliver a publication to an edge",
            ["edge"],
            registry=r,
        )
        self.edge_failures = {e: failures.labels(edge=e) for e in edges}
        acks = Counter(
            "edgeproxy_takedown_edge_acks",
            "Publications an edge acknowledged as enforced",
            ["edge"],
            registry=r,
        )
        self.edge_acks = {e: acks.labels(edge=e) for e in edges}
        sent = Counter(
            "edgeproxy_takedown_notifications_sent",
            "Notifications delivered",
            ["channel", "kind"],
            registry=r,
        )
        failed = Counter(
            "edgeproxy_takedown_notification_failures",
            "Failed notification delivery attempts (each retry counts)",
            ["channel", "kind"],
            registry=r,
        )
        abandoned = Counter(
            "edgeproxy_takedown_notifications_abandoned",
            "Notifications given up after notify.max_attempts",
            ["channel", "kind"],
            registry=r,
        )
        pairs = [(c, k) for c in Channel for k in Kind]
        self.notify_sent = {p: sent.labels(channel=p[0].value, kind=p[1].value) for p in pairs}
        self.notify_failed = {p: failed.labels(channel=p[0].value, kind=p[1].value) for p in pairs}
        self.notify_abandoned = {
            p: abandoned.labels(channel=p[0].value, kind=p[1].value) for p in pairs
        }
        self.time_to_enforcement = Histogram(
            "edgeproxy_takedown_time_to_enforcement_seconds",
            "Decision to the last edge's acknowledgement, per actioned case",
            buckets=ENFORCEMENT_BUCKETS,
            registry=r,
        )

    def refresh(self, conn: sqlite3.Connection, now: float, cfg: TakedownConfig) -> None:
        """The database-derived gauges; run on the store thread before a scrape."""
        by_state: Tally[str] = Tally()
        for state, n in conn.execute(
            "SELECT c.state, COUNT(*) FROM notices n JOIN cases c ON c.id = n.case_id"
            " GROUP BY c.state"
        ):
            by_state[state] = n
        for s, child in self.notices.items():
            child.set(by_state[s.value])
        overdue: Tally[str] = Tally()
        complaints = open_complaints(conn)
        for row in conn.execute(
            "SELECT * FROM cases WHERE state NOT IN ('rejected', 'restored', 'incomplete')"
            " OR id IN (SELECT case_id FROM complaints WHERE decided_at IS NULL)"
        ):
            overdue.update(overdue_reasons(row, now, cfg, complaints.get(row["id"])))
        overdue["unsuspension"] = conn.execute(
            "SELECT COUNT(*) FROM publications WHERE kind = 'unsuspend' AND done_at IS NULL"
            " AND created_at + ? < ?",
            (cfg.deadlines.lift_s, now),
        ).fetchone()[0]
        for x, child in self.overdue.items():
            child.set(overdue[x])
        rejected = counts(conn)
        for route, child in self.rejected.items():
            child.set(rejected.get(route, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
