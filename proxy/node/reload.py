"""What a SIGHUP's new config asks of the workers, decided from the old and new config alone.

A reload used to replace every worker, and each worker's memory cache went with it. Now:

- **In place** when only settings a running worker can take changed: `sites` (the same names in
  the same order, so site indices, per-site counters and stored objects keep their meaning),
  `limits` (new connections get them), `blocklist`, `admin` and the supervisor's own timings.
  Workers, connections and memory caches stay (`config.apply`, proxy/node/worker.py).
- **Rolling restart** for anything else (listen addresses, worker count, `[cache]`, `[origin]`,
  `[log]`, `[tls]`, `via_name`, GC, sites added, removed or reordered). New workers start with
  empty memory tiers; with the node tier on (`cache.node_tier_bytes`, LMDB, shared by the
  node's workers and surviving restarts) they find the objects there, so the cache survives
  this path too. Without it, this path starts cold: turn the node tier on where reloads that
  restart are frequent.

`[fleet]` (and `blocklist.public_key`, which verifies the feed) concern the supervisor alone: a
change makes its follower end the session with the old feed and follow the new settings from
the version the node enforces (proxy/fleet/follower.py `refollow`); workers are not touched.
Turning the fleet on or off (`fleet.redis_url` set or emptied) would change where the node's
list comes from (a feed or `blocklist.dir`): that needs a restart, and a reload keeps the
running `[fleet]` and `blocklist.dir`, saying so (`fleet_plan`).

Either way, a site whose **cache-relevant** settings changed loses its objects (memory and node
tier), and only that site: anything in its `[[sites]]` entry except the fields listed in
`SITE_NEUTRAL_FIELDS` (how its 451s and TLS answers look), so a site's new origin, hosts or path
rules never answer from what the old ones stored. A change to `[cache]` fields that decide what
is stored and for how long (`CACHE_POLICY_FIELDS`) drops every site's objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from proxy.config import CacheConfig, Config, FleetConfig, Site

IN_PLACE_FIELDS = frozenset(
    {
        "sites",
        "limits",
        "blocklist",
        "admin",
        "drain_timeout_s",
        "worker_restart_backoff_s",
        "fleet",
    }
)
# Site fields that change how answers look, never what is stored for the site.
SITE_NEUTRAL_FIELDS = frozenset(
    {"blocked_by_url", "hsts_max_age_s", "hsts_include_subdomains", "tls_cert_file", "tls_key_file"}
)
# [cache] fields that shaped the stored objects (what was stored, its freshness, its size).
CACHE_POLICY_FIELDS = frozenset(
    {
        "heuristic_fraction",
        "heuristic_max_s",
        "store_set_cookie",
        "heuristic_with_cookie",
        "max_object_bytes",
    }
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    restart_for: tuple[str, ...]  # settings that need new workers; empty: apply in place
    dropped_sites: tuple[str, ...]  # sites (of the new config) whose cached objects go

    @property
    def in_place(self) -> bool:
        return not self.restart_for


def _site_cache_view(site: Site) -> tuple[object, ...]:
    return tuple(getattr(site, f) for f in Site.__struct_fields__ if f not in SITE_NEUTRAL_FIELDS)


def _cache_policy(cache: CacheConfig) -> tuple[object, ...]:
    return tuple(getattr(cache, f) for f in sorted(CACHE_POLICY_FIELDS))


def plan(old: Config, new: Config) -> ReloadPlan:
    restart = [
        f
        for f in Config.__struct_fields__
        if f not in IN_PLACE_FIELDS and getattr(old, f) != getattr(new, f)
    ]
    if [s.name for s in old.sites] != [s.name for s in new.sites]:
        restart.append("sites (added, removed or reordered)")
    before = {s.name: _site_cache_view(s) for s in old.sites}
    if _cache_policy(old.cache) != _cache_policy(new.cache):
        dropped = [s.name for s in new.sites]
    else:
        dropped = [
            s.name for s in new.sites if s.name in before and before[s.name] != _site_cache_view(s)
        ]
    return ReloadPlan(tuple(restart), tuple(dropped))


@dataclass(frozen=True, slots=True)
class FleetPlan:
    changed: tuple[str, ...]  # `fleet.…` (and `blocklist.public_key`) fields that differ
    refused: str = ""  # why the change cannot apply on a reload ("": it can)
    keep: Config | None = None  # with `refused`: the new config, less the refused change

    @property
    def refollow(self) -> bool:
        return bool(self.changed) and not self.refused


def fleet_plan(old: Config, new: Config) -> FleetPlan:
    changed = [
        f"fleet.{f}"
        for f in FleetConfig.__struct_fields__
        if getattr(old.fleet, f) != getattr(new.fleet, f)
    ]
    if old.blocklist.public_key != new.blocklist.public_key:
        changed.append("blocklist.public_key")
    if bool(old.fleet.redis_url) == bool(new.fleet.redis_url):
        return FleetPlan(tuple(changed)) if old.fleet.redis_url else FleetPlan(())
    turn = "on" if new.fleet.redis_url else "off"
    keep = msgspec.structs.replace(
        new,
        fleet=old.fleet,
        blocklist=msgspec.structs.replace(new.blocklist, dir=old.blocklist.dir),
    )
    return FleetPlan(
        tuple(changed),
        f"fleet.redis_url: turning the fleet feed {turn} changes where the node's list comes "
        "from (a feed or blocklist.dir) and needs a restart",
        keep,
    )
