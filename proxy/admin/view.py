"""What the admin API needs from a node, and nothing more.

The admin listener depends on these Protocols, not on the supervisor: the supervisor satisfies
them structurally, and the CLI hands `start_admin` to the supervisor to run. Dependencies run one
way (admin → node's data types, never node → admin), and the admin API can be tested against a
small fake node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from proxy.blocklist.pin import Pinner
from proxy.config import Config
from proxy.node.control import StatsReply
from proxy.node.health import NodeHealth


class BlocklistView(Protocol):
    """The node's blocklist as the admin API reads and changes it (NodeBlocklist)."""

    version: int
    applied_at: float
    file_sequence: int | None
    reload_failures: int
    compiles: int  # compile jobs finished (proxy/blocklist/loader.py)
    tables_shipped: int  # file versions taken from a signer's table (proxy/blocklist/shipped.py)
    table_rejections: dict[str, int]  # shipped tables refused, by reason
    pinner: Pinner  # the probe sections locked in memory (proxy/blocklist/pin.py)
    last_errors: list[str]
    # The last signed audit-log head a publisher sent with a version or a push.
    audit_head: dict[str, Any] | None

    @property
    def pushed(self) -> Mapping[str, Any]: ...

    @property
    def history(self) -> Iterable[dict[str, Any]]: ...

    def counts(self) -> dict[str, int]: ...

    def known(self, entry_id: str) -> bool: ...

    def loading_status(self, now: float | None = None) -> dict[str, Any] | None:
        """The compile job running now: what, phase, entries done/total, rate, ETA; or None."""
        ...

    def stale_since(self, now: float | None = None) -> float | None:
        """When the enforced file version passed its signed valid_until; None while valid."""
        ...

    def keep_audit_head(self, head: dict[str, Any] | None, via: str) -> None: ...

    async def push(
        self, raw_entries: list[dict[str, Any]], audit_head: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def remove(
        self, entry_id: str, audit_head: dict[str, Any] | None = None
    ) -> dict[str, Any] | None: ...


class NodeView(Protocol):
    """A running node: config, workers' stats and health, blocklist, purge."""

    admin_token: str
    restarts: int
    tls_reload_failures: int  # certificate reloads refused (the served ones kept)
    started_at: float

    @property
    def cfg(self) -> Config: ...

    @property
    def blocklist(self) -> BlocklistView: ...

    @property
    def retired_stats(self) -> dict[str, Any] | None:
        """The summed counts of workers gone (so counters never go backwards)."""
        ...

    async def gather_stats(self, timeout_s: float = 2.0) -> list[StatsReply]: ...

    def health(self) -> NodeHealth: ...

    async def broadcast(self, op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Send a control request to every worker; their answers (ControlError if one
        failed). The gate's admin route asks workers to take a new roster this way."""
        ...

    async def purge(self, *, url: str = "", prefix: str = "", host: str = "") -> tuple[int, int]:
        """(objects purged, workers that answered); raises ValueError (with the reason) for a
        URL or prefix that is not one, ControlError if a worker failed."""
        ...
