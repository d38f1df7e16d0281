"""Typed configuration: frozen msgspec Structs, unknown fields rejected, every limit named with
its unit. `load()` reads TOML; `from_flags()` builds the same object from `serve` flags alone.

A broken config never starts: `ConfigError` carries the file, line and field at fault.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from yarl import URL

from proxy.front.tls import CertSpec


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The front's limits and deadlines (per connection / request)."""

    max_request_line_bytes: int = 8192
    max_header_count: int = 100
    max_header_bytes: int = 32768
    max_header_field_bytes: int = 8192
    max_body_bytes: int = 100 << 20
    header_read_timeout_s: float = 10.0
    body_read_timeout_s: float = 30.0  # longest silence while a request body arrives
    body_total_timeout_s: float = 300.0  # the whole request body, from the end of its head
    body_min_rate_bytes_per_s: int = 1024  # average since the head, once the grace is over; 0: off
    body_min_rate_grace_s: float = 10.0
    keepalive_timeout_s: float = 75.0
    lingering_close_timeout_s: float = 2.0  # after an error answer, keep draining this long
    write_stall_timeout_s: float = 60.0  # a client that reads none of our answer this long
    max_pipelined_requests: int = 16
    body_buffer_high_bytes: int = 256 << 10
    write_buffer_high_bytes: int = 256 << 10
    write_buffer_low_bytes: int = 64 << 10
    max_connections: int = 0
    # On the node's shared listen socket: connections a worker accepts a loop turn (1 spreads a
    # burst over workers), how long a worker over its share of the node's connections leaves a
    # new one to the others (0: off), and the pause after EMFILE/ENFILE/ENOBUFS.
    accepts_per_loop_turn: int = 1
    accept_defer_s: float = 0.001
    accept_error_pause_s: float = 0.5


class CacheConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    memory_cache_bytes: int = 256 << 20  # the node's total; each worker gets its share
    # Origin body bytes held before delivery (to be judged whole, or stored): the node's
    # total, each worker gets its share; a read beyond it gets 503 + Retry-After.
    inflight_body_bytes: int = 512 << 20
    inflight_retry_after_s: int = 5
    max_object_bytes: int = 8 << 20  # larger responses stream through unstored
    heuristic_fraction: float = 0.1  # RFC 9111 §4.2.2: of (Date - Last-Modified)
    heuristic_max_s: float = 86400.0
    hit_for_miss_s: float = 10.0  # remember "uncacheable" so followers don't queue
    # Those marks a worker keeps at most, and the bytes of their keys (targets run to the
    # request-line limit); the oldest give way.
    hit_for_miss_max_entries: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    hit_for_miss_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 32 << 20
    # How long a follower waits for its leader (in its worker, or with a node tier, another).
    coalesce_wait_s: float = 15.0
    store_set_cookie: bool = False  # a shared cache handing one user's cookie to others is a leak
    # A response with Set-Cookie (store_set_cookie false): "strip" stores it, with explicit
    # freshness only, without its Set-Cookie fields (the client it was fetched for gets them,
    # no reuse does: as Squid and Traffic Server do); "pass" never stores it.
    set_cookie_policy: Literal["strip", "pass"] = "strip"
    # A response to a request with Cookie, without explicit freshness or `public`, is likely
    # personalised: not stored on heuristic freshness alone unless this is set.
    heuristic_with_cookie: bool = False
    max_stale_serve_s: float = 0.0  # extra grace (beyond stale-while-revalidate/if-error)
    # The same grace when the origin cannot be reached at all (refused, reset, timed out):
    # a stale copy beats an error page; never past no-cache, must-revalidate or s-maxage.
    stale_if_unreachable_s: float = 60.0
    entry_overhead_bytes: int = 400  # accounted per stored object besides headers and body
    shared_tier_url: str = ""  # e.g. "redis://127.0.0.1:6379/0"; empty: no shared tier
    shared_tier_timeout_s: float = 0.05  # one lookup (one or two round trips)
    shared_tier_write_timeout_s: float = 1.0  # one background store or delete
    shared_tier_retry_after_s: float = 1.0  # after a failure, lookups skip the tier this long
    shared_tier_max_object_bytes: int = 1 << 20  # bodies above this stay per worker
    shared_tier_queue_max_items: int = 256  # pending stores per worker; beyond: dropped
    shared_tier_queue_max_bytes: int = 32 << 20
    shared_tier_max_connections: int = 32  # per worker
    shared_tier_connect_timeout_s: float = 1.0  # TCP + TLS + AUTH of one new connection
    # Redis ACL user and a file holding its password (or both in the URL's userinfo).
    shared_tier_username: str = ""
    shared_tier_password_file: str = ""
    # rediss:// only: the CA that signed the server's certificate (default: the system's),
    # and a client certificate and key when the server asks for one (tls-auth-clients).
    shared_tier_tls_ca_file: str = ""
    shared_tier_tls_cert_file: str = ""
    shared_tier_tls_key_file: str = ""
    hot_memo_max_entries: int = 65536  # raw targets remembered for hot hits and 451s
    # Bytes of raw targets, Hosts and 451 answers each of the memo's tables may hold.
    hot_memo_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 32 << 20
    # Origin answer heads the pass-through lane remembers as not storable (proxy/phases/
    # lane.py); 0 turns the lane off (every pass-through walks the phases).
    pass_lane_max_entries: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1024
    # The node tier (proxy/cache/node.py): one persistent cache every worker of the node
    # shares, behind each worker's memory tier. 0 bytes: none. Path "": <state_dir>/node-cache.
    node_tier_bytes: int = 0
    node_tier_path: str = ""
    # A worker waiting for another worker's fetch of the same key re-reads the node tier with
    # a backoff from 1 ms up to this (proxy/cache/node.py, "Coalescing across workers").
    node_lease_poll_max_s: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.02
    # A node-tier hit's access time (what eviction orders by) is written in a batch at most
    # this late: one LMDB write transaction per batch, not per hit (0: every loop turn).
    node_touch_delay_s: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.1
    # Reserve the node tier's disk at start (twice node_tier_bytes and 64 MiB) so its writes
    # go through a writable map (a store costs about half as much): done only on ext2-4, xfs
    # or tmpfs and when the disk keeps node_tier_preallocate_keep_free_bytes free after it;
    # otherwise (or false) the tier is written with pwrite(), as before.
    node_tier_preallocate: bool = True
    node_tier_preallocate_keep_free_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1 << 30
    # A node-tier object is adopted into a worker's memory tier once read 1 + size / this
    # many bytes times within the doorkeeper's window (proxy/cache/admission.py): a large one
    # must be read more often, as it evicts as many bytes as several small ones.
    node_adopt_bytes_per_read: Annotated[int, msgspec.Meta(gt=0)] = 32 << 10
    node_touch_interval_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # Per worker: node-tier records proven once and answered again by checking their seal,
    # for the memo's node-tier hits (proxy/cache/node.py, `Proven`; about 2 KB each, no body).
    node_proof_cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 << 20


class OriginConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 30.0
    read_timeout_s: float = 30.0  # longest gap between body chunks
    total_timeout_s: float = 300.0
    pool_connections: int = 256  # per worker
    keepalive_timeout_s: float = 10.0  # keep below the origin's idle timeout
    # An origin response head over any of these is refused (502, connection closed, nothing
    # stored or relayed); see proxy/origin/head.py for how each client enforces them.
    max_response_header_bytes: Annotated[int, msgspec.Meta(gt=0)] = 64 << 10  # names + values
    max_response_header_count: Annotated[int, msgspec.Meta(gt=0)] = 128
    # One field's name + value; also the longest reason phrase on the status line.
    max_response_header_field_bytes: Annotated[int, msgspec.Meta(gt=0)] = 16 << 10
    # Heads of whole answers parsed before, replayed when an answer repeats one byte for byte
    # (proxy/origin/h1.py, `known_heads`): how many per worker (0: off; emptied whole when
    # full), and the largest head kept.
    response_head_memo_entries: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 512
    response_head_memo_max_bytes: Annotated[int, msgspec.Meta(ge=0, le=64 << 10)] = 4096
    # The fields sent upstream, remembered by the request's header list (proxy/phases/fetch.py):
    # the bytes a worker keeps at most, about three times each header list's.
    request_fields_memo_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 16 << 20
    # Only one whole answer in this many is filed: a head that repeats is still kept within
    # a few dozen answers, and heads that never repeat (an ETag of their own) cost nothing.
    response_head_memo_learn_one_in: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] = 8


class Site(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    hosts: list[str]
    origin: str
    blocked_by_url: str = ""  # Link: <…>; rel="blocked-by" on 451 answers
    forward_host: bool = False  # send the client's Host upstream instead of the origin's
    # The blocklist folds path case by default (over-blocks `/A` next to a listed `/a`); a
    # site whose origin is case-sensitive sets this so that they are different resources.
    case_sensitive_paths: bool = False
    # TLS toward clients (with `listen_tls`): this site's own certificate chain and key (PEM),
    # served for its host names by SNI; without them the site gets [tls]'s default certificate.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # RFC 6797: Strict-Transport-Security on answers over TLS (never over plain HTTP); 0: none.
    hsts_max_age_s: int = 0
    hsts_include_subdomains: bool = False
    # [gate] on: what this site's hosts are answered while its customer is not verified
    # (the page, as HTML, with gate.holding_status); "": gate.holding_page_file, else 421.
    holding_page_file: str = ""


class TlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The TLS listener (`listen_tls`): its default certificate and its limits."""

    # Served for a name no site's certificate covers, or a handshake without SNI; without
    # it, such handshakes are refused (unrecognized_name).
    cert_file: str = ""
    key_file: str = ""
    handshake_timeout_s: float = 10.0  # from accept to a finished handshake
    # Re-read certificates and keys when their files change (SIGHUP always does).
    watch_files: bool = True
    poll_interval_s: float = 60.0  # also re-check the files this often (0: events only)


class BlocklistConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    dir: str = ""
    public_key: str = ""
    allow_empty: bool = False
    poll_interval_s: float = 10.0
    max_file_bytes: int = 1 << 30
    hash_spool_max_bytes: int = 32 << 20  # misses up to this size are hashed before delivery
    # Bodies over the memory spool: "spool-disk" (held in a temporary file until judged whole,
    # then sent), "stream" (hashed while streaming: a listed one goes out before it is known),
    # or "refuse" (502).
    oversize_policy: str = "spool-disk"
    disk_spool_max_bytes: int = 4 << 30  # larger bodies are refused (502): never judged
    disk_spool_dir: str = ""  # "" = the system's temporary directory
    # A full version loads into a serving worker 250 entries a step, with this pause after
    # each step, so a million-entry list does not starve requests while it loads.
    load_step_pause_s: float = 0.003
    # A newer file version that differs from the enforced one by at most this share of its
    # entries is sent to workers as a delta (cheap), not as a full reload.
    delta_max_fraction: float = 0.1
    # After pushes, the supervisor recompiles the full version for workers that start later
    # once changes have been quiet this long (they replay the deltas meanwhile); with the
    # mapped format only once the overlay is due to be folded (overlay_max_fraction).
    compile_quiet_s: float = 2.0
    # A version is read, verified and compiled in a child process; one that takes longer than
    # this is stopped (the enforced list stays, the failure is counted).
    compile_timeout_s: Annotated[float, msgspec.Meta(gt=0.0)] = 3600.0
    # A compile or table adoption beside serving workers starts in the idle scheduling class
    # (SCHED_IDLE: only CPU time serving leaves, and a worker that wakes takes the core at
    # once) for up to this many seconds, then goes on at nice +10 (moved where allowed,
    # else run again): a node whose cores serving keeps busy still takes the version. 0:
    # always at nice +10.
    compile_idle_s: Annotated[float, msgspec.Meta(ge=0.0)] = 20.0
    # Processes that decode, validate and canonicalise a large version's entry lines in
    # parallel (forked by the compile child, each a share of the lines); 1: the child alone.
    compile_processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # How the supervisor hands a full version to workers: "mapped", a file every worker maps
    # without copying (proxy/blocklist/table.py), or "msgpack", entries each worker builds
    # into its own dicts (the format before it; kept as a fallback).
    compiled_format: Literal["mapped", "msgpack"] = "mapped"
    # Workers hold changes made since their mapped base in memory; once those pass this share
    # of the base (and 1000), the refreshed base is swapped in and the overlay dropped.
    overlay_max_fraction: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.02
    # A full version shipped with its signer's compiled table and signed manifest
    # (`blocklist sign --table`, proxy/blocklist/shipped.py) is mapped instead of compiled once
    # this many of its lines, drawn at random, are found in the table; 0: always compile here.
    table_spot_check_entries: Annotated[int, msgspec.Meta(ge=0)] = 1000
    # How such a table enters the node's state once checked: "copy" (the node maps a copy it
    # hashed: a later write to the shipped file cannot reach what workers map; twice the disk)
    # or "link" (a hard link on the same filesystem, made read-only: no second 29 GB at 100M
    # entries, but whoever can still write the shipped file can change what workers map; a
    # link across filesystems falls back to a copy).
    table_install: Literal["copy", "link"] = "copy"
    # A worker checks a mapped table it is given (its checksum: every byte) before it
    # enforces it, unless the supervisor vouches for that very file (it checked every byte:
    # same device, inode, size, mtime and checksum; `table.Seal`); true: every worker checks
    # every table itself all the same (2.9 GB each at 10M entries).
    worker_check_whole: bool = False
    # What a worker reads (the check, or the probe sections alone) from this many bytes on
    # runs in a child process at a lower priority (a thread's check shares the worker's GIL:
    # its loop stalled 40-150 ms under load), less in a thread (a Python start costs ~0.1 s).
    check_in_child_min_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 << 20
    # The supervisor locks the probe sections of the table workers map in memory (mlock:
    # ~20 bytes a key, the file's own pages), so no probe waits for the disk; a refused lock
    # (RLIMIT_MEMLOCK) is logged and counted, and the page cache decides as before.
    pin_probe_sections: bool = True
    # Pushes and removals are kept on disk as records in a log of this many bytes (one
    # in-place write and fdatasync each) between two writes of the whole state; 0: the state
    # files are written whole at every change.
    change_log_bytes: Annotated[int, msgspec.Meta(ge=0)] = 4 << 20
    # A new version's purge of the stored objects it lists gives each worker's loop back
    # after this long, and goes on in its next turn.
    purge_slice_s: Annotated[float, msgspec.Meta(gt=0.0)] = 0.002
    default_blocked_by_url: str = ""
    # The takedown service's public notice form: 451 bodies link to it and to their case.
    notice_form_url: str = ""
    # Content codings are removed before a body is hashed for sha256 entries
    # (proxy/blocklist/digest.py); these bound that decoding so a decompression bomb is cheap.
    decode_max_bytes: Annotated[int, msgspec.Meta(gt=0)] = 256 << 20
    decode_max_ratio: Annotated[float, msgspec.Meta(ge=1.0, le=1e9)] = 100.0  # decoded/encoded
    decode_ratio_grace_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1 << 20  # ratio unchecked below
    decode_max_codings_count: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4  # stacked codings
    # A coding the edge cannot remove: "refuse" (502 while a sha256 entry is listed; with none,
    # stored unjudged until one is) or "raw-only" (check the raw digest only).
    unknown_coding_policy: Literal["refuse", "raw-only"] = "refuse"
    # A signed version more than this far beyond the enforced sequence is refused (a jump to
    # near the maximum would make every later real version look older).
    max_sequence_step: int = 1_000_000
    # Refuse versions whose signer set no valid_until (freeze-attack protection made mandatory).
    require_valid_until: bool = False


class FleetConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A fleet of nodes following one takedown feed on Redis Streams (proxy/fleet/)."""

    redis_url: str = ""  # redis://[user:password@]HOST:PORT/DB or rediss://…; empty: no fleet
    node_name: str = ""  # how acknowledgements name this node; "": the host name
    key_prefix: str = "edgeproxy:fleet"  # every key the feed uses starts with it
    username: str = ""  # Redis ACL user (also allowed in the URL)
    password_file: str = ""  # a file holding the Redis password (kept out of the config)
    tls_ca_file: str = ""  # rediss://: CA bundle to verify the server ("": the system's)
    tls_cert_file: str = ""  # rediss://: client certificate, for servers that ask for one
    tls_key_file: str = ""
    connect_timeout_s: float = 2.0
    block_s: float = 5.0  # one blocking XREAD waits at most this long for a new version
    read_timeout_s: float = 2.0  # a reply may take this long beyond the block
    backoff_initial_s: float = 0.2  # after a failure, wait this long before reconnecting
    backoff_max_s: float = 5.0  # doubling up to this
    # /readyz reports a node behind the feed or cut off from Redis only after this long.
    ready_grace_s: float = 10.0
    ack_ttl_s: float = 30 * 86400.0  # per-version acknowledgements expire after this


class AdminConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8081"  # empty: no admin listener
    token_file: str = ""
    # How long an apply waits for each worker (a million-entry full load takes 10-30 s).
    apply_timeout_s: float = 120.0
    # Host names the admin API answers to (Host header, port ignored); anything else gets 421,
    # which defeats DNS rebinding. Empty: the listen address's host, localhost, 127.0.0.1, ::1
    # (and, listening on 0.0.0.0 or ::, any IP literal: those cannot be rebound).
    host_names: list[str] = []
    max_body_bytes: int = 64 << 20  # a larger declared body gets 413 before a byte is read
    body_timeout_s: float = 30.0  # the whole request body must arrive within this


class GateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The go-live gate (proxy/gate.py): hosts not in the signed site roster are held."""

    enabled: bool = False
    roster_dir: str = ""  # "": <state_dir>/gate; the admin API's PUT /gate/roster writes here
    public_key: str = ""  # "": blocklist.public_key (the takedown service signs both)
    poll_interval_s: float = 1.0  # how often each worker looks for a newer roster file
    max_roster_bytes: int = 16 << 20  # a larger roster file or body is refused
    held_status: int = 421  # a held host without a holding page
    holding_page_file: str = ""  # HTML for held hosts of every site without its own
    holding_status: int = 503  # the status of a holding page
    # Requests under this path reach the origin of a held site (domain-control validation).
    challenge_path_prefix: str = "/.well-known/edgeproxy-challenge/"


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    access_log: str = ""  # "", "-" (stdout) or a file path
    access_log_sample: float = 1.0
    access_log_format: Literal["json", "text"] = "json"  # one JSON object, or combined + key=value
    # Lines are formatted and handed to the writer thread this often; records a worker holds
    # beyond the limit (the destination not keeping up) are dropped and counted.
    access_log_flush_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.2
    access_log_max_buffered_records: Annotated[int, msgspec.Meta(ge=1)] = 65536
    # Formatted lines waiting for the writer thread: beyond this the next batch waits unformatted.
    access_log_max_pending_bytes: Annotated[int, msgspec.Meta(ge=1)] = 16 << 20
    # Records formatted per loop turn: requests are answered between such chunks.
    access_log_format_chunk_rows: Annotated[int, msgspec.Meta(ge=1)] = 256
    # Distinct request field lines whose User-Agent and Referer a worker keeps (each at most
    # 2 KiB); 0: read them anew for every hit.
    access_log_client_fields_max_entries: Annotated[int, msgspec.Meta(ge=0)] = 1024
    format: Literal["text", "json"] = "text"  # the service log on stderr (not the access log)
    # A request id in every answer, sent to the origin and logged ("": none). A client's own is
    # kept only from these networks (a load balancer that assigns one), and only well formed.
    request_id_header: str = "X-Request-Id"
    request_id_trusted_from: list[str] = []


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8080"
    listen_tls: str = ""  # HOST:PORT for HTTPS (TLS terminated here); empty: no TLS listener
    workers: int = 0  # 0: one per core
    via_name: str = "edgeproxy"
    state_dir: str = ""  # "": default_state_dir() (never relative to where serve was run)
    drain_timeout_s: float = 30.0
    worker_restart_backoff_s: float = 0.5
    # A full cyclic-GC pass walks every stored entry (0.4-0.6 s at 200k entries, measured), so
    # workers move survivors out of its reach (gc.freeze) this often, and reclaim cyclic garbage
    # that was frozen with them by one full pass this often (0 disables either).
    gc_freeze_interval_s: float = 1.0
    gc_full_collect_interval_s: float = 900.0
    # Each worker samples its loop lag this often and times its GC pauses, exported per worker
    # (edgeproxy_worker_loop_lag_seconds, ..._gc_pause_seconds: proxy/node/tail.py); 0: off.
    tail_sample_interval_s: float = 0.01
    # A loop-lag sample still waiting after this long logs the stack the worker's main thread
    # is in at that moment (what holds the loop), at most once a second per worker; 0: off.
    tail_stall_log_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    sites: list[Site] = []
    limits: Limits = Limits()
    cache: CacheConfig = CacheConfig()
    origin: OriginConfig = OriginConfig()
    blocklist: BlocklistConfig = BlocklistConfig()
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    tls: TlsConfig = TlsConfig()
    gate: GateConfig = GateConfig()
    fleet: FleetConfig = FleetConfig()

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)


def default_state_dir(
    env: Mapping[str, str] | None = None, euid: int | None = None, home: str | None = None
) -> Path:
    """Where a node keeps pushed entries and its version when `state_dir` is not set:
    systemd's $STATE_DIRECTORY (StateDirectory=), /var/lib/edgeproxy for root, else
    $XDG_STATE_HOME/edgeproxy (XDG Base Directory: "state that should persist between
    restarts"), by default ~/.local/state/edgeproxy."""
    env = os.environ if env is None else env
    if given := env.get("STATE_DIRECTORY", "").split(":")[0]:
        return Path(given)
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/var/lib/edgeproxy")
    xdg = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(xdg):  # the spec: a relative value is invalid, ignore it
        xdg = os.path.join(home or os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "edgeproxy"


@dataclass(frozen=True)
class ConfigError(Exception):
    message: str
    file: str = ""
    line: int | None = None
    field: str = ""

    def __str__(self) -> str:
        where = self.file or "config"
        if self.line is not None:
            where += f":{self.line}"
        field = f" (field {self.field})" if self.field else ""
        return f"{where}: {self.message}{field}"


def parse_hostport(value: str, *, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} must be HOST:PORT, got {value!r}", field=what)
    return host.strip("[]") or "127.0.0.1", int(port)


def validate(cfg: Config, *, file: str = "", text: str = "") -> Config:
    """Checks a Struct's types cannot express. Raises ConfigError naming the field.

    The steps run in a fixed order, so a config with several faults always reports the same one.
    """

    def fail(msg: str, path: str) -> ConfigError:
        return ConfigError(msg, file, _locate(text, path) if text else None, path)

    _check_listen(cfg)
    _check_site_origins(cfg, fail)
    _check_numbers(cfg, "$", fail)
    _check_site_names(cfg, fail)
    _check_header_values(cfg, fail)
    _check_files(cfg, fail)
    _check_front_limits(cfg, fail)
    _check_cache(cfg, fail)
    _check_blocklist(cfg, fail)
    _check_tls(cfg, fail)
    _check_gate(cfg, fail)
    _check_fleet(cfg, fail)
    if not 0.0 <= cfg.log.access_log_sample <= 1.0:
        raise fail("access_log_sample must be within 0..1", "$.log.access_log_sample")
    _check_request_ids(cfg, fail)
    return cfg


def _check_request_ids(cfg: Config, fail: _Fail) -> None:
    from proxy.front.request_id import RequestIds, check_networks

    try:
        check_networks(cfg.log.request_id_trusted_from)
    except ValueError as e:
        raise fail(str(e), "$.log.request_id_trusted_from") from None
    if cfg.log.request_id_header:
        try:
            RequestIds(cfg.log.request_id_header)
        except ValueError as e:
            raise fail(str(e), "$.log.request_id_header") from None


_Fail = Callable[[str, str], ConfigError]


def _check_listen(cfg: Config) -> None:
    parse_hostport(cfg.listen, what="listen")
    if cfg.listen_tls:
        if parse_hostport(cfg.listen_tls, what="listen_tls") == parse_hostport(
            cfg.listen, what="listen"
        ):
            raise ConfigError("listen_tls must differ from listen", field="listen_tls")
    if cfg.admin.listen:
        parse_hostport(cfg.admin.listen, what="admin.listen")


def _check_site_origins(cfg: Config, fail: _Fail) -> None:
    """A Host must lead to exactly one site, or which origin answers would depend on order."""
    if not cfg.sites:
        raise fail("at least one site (or --origin) is required", "$.sites")
    seen: dict[str, str] = {}
    for i, site in enumerate(cfg.sites):
        url = URL(site.origin)
        if url.scheme not in ("http", "https") or not url.host:
            raise fail(
                f"origin must be an http(s) URL, got {site.origin!r}", f"$.sites[{i}].origin"
            )
        if url.path not in ("", "/") or url.query_string:
            raise fail("origin must not carry a path or query", f"$.sites[{i}].origin")
        if not site.hosts:
            raise fail("a site needs at least one host name ('*' for any)", f"$.sites[{i}].hosts")
        for h in site.hosts:
            key = h.lower().rstrip(".")
            if key in seen:
                raise fail(
                    f"host {h!r} is already served by site {seen[key]!r}", f"$.sites[{i}].hosts"
                )
            seen[key] = site.name


def _check_site_names(cfg: Config, fail: _Fail) -> None:
    """Names tell sites apart in metrics and the admin API, so they are unique tokens; a host name
    that admit could never match is a typo, refused rather than silently serving nothing."""
    names: dict[str, int] = {}
    for i, site in enumerate(cfg.sites):
        if not _TOKEN.fullmatch(site.name):
            raise fail(f"site name must be a token, got {site.name!r}", f"$.sites[{i}].name")
        if site.name in names:
            raise fail(
                f"site name {site.name!r} is already used by sites[{names[site.name]}]",
                f"$.sites[{i}].name",
            )
        names[site.name] = i
        for h in site.hosts:
            if not _valid_host(h):
                raise fail(f"invalid host name {h!r}", f"$.sites[{i}].hosts")
        if site.blocked_by_url and not _valid_link_url(site.blocked_by_url):
            raise fail(
                "blocked_by_url must be an absolute http(s) URL without spaces, quotes, "
                f"<, > or control characters, got {site.blocked_by_url!r}",
                f"$.sites[{i}].blocked_by_url",
            )


def _check_header_values(cfg: Config, fail: _Fail) -> None:
    """Both go into response fields as they are (Link, Via, Cache-Status): a character that ends
    or splits a field would break every answer that carries it."""
    if cfg.blocklist.default_blocked_by_url and not _valid_link_url(
        cfg.blocklist.default_blocked_by_url
    ):
        raise fail(
            "default_blocked_by_url must be an absolute http(s) URL without spaces, quotes, "
            "<, > or control characters",
            "$.blocklist.default_blocked_by_url",
        )
    if cfg.blocklist.notice_form_url and (
        not _valid_link_url(cfg.blocklist.notice_form_url) or "?" in cfg.blocklist.notice_form_url
    ):
        raise fail(
            "notice_form_url must be an absolute http(s) URL without a query, spaces, quotes, "
            "<, > or control characters",
            "$.blocklist.notice_form_url",
        )
    if not _TOKEN.fullmatch(cfg.via_name):
        raise fail(
            f"via_name must be an HTTP token (it goes into Via and Cache-Status), "
            f"got {cfg.via_name!r}",
            "$.via_name",
        )


def _check_files(cfg: Config, fail: _Fail) -> None:
    """These paths are opened only once serving starts; checked here, a wrong one is reported
    with its field and line instead of as a failure at run time."""
    for value, path in (
        (cfg.admin.token_file, "$.admin.token_file"),
        (cfg.blocklist.public_key, "$.blocklist.public_key"),
    ):
        if value and not os.access(value, os.R_OK):
            raise fail(f"cannot read {value!r}", path)
        if value and not os.path.isfile(value):
            raise fail(f"{value!r} is not a file", path)
    log = cfg.log.access_log
    if log and log != "-":
        parent = os.path.dirname(os.path.abspath(log))
        if not os.path.isdir(parent):
            raise fail(f"access log directory {parent!r} does not exist", "$.log.access_log")


def _check_front_limits(cfg: Config, fail: _Fail) -> None:
    """The front owns the rules its limits must satisfy; building a FrontLimits applies them, so
    they are not written twice."""
    from dataclasses import fields

    from proxy.front.limits import FrontLimits

    try:
        FrontLimits(**{f.name: getattr(cfg.limits, f.name) for f in fields(FrontLimits)})
    except ValueError as e:
        name = str(e).split(" ", 1)[0]
        raise fail(str(e), f"$.{name}") from e


def _check_cache(cfg: Config, fail: _Fail) -> None:
    if cfg.cache.max_object_bytes > cfg.cache.memory_cache_bytes:
        raise fail("max_object_bytes exceeds memory_cache_bytes", "$.cache.max_object_bytes")
    if cfg.cache.shared_tier_url:
        from proxy.cache.shared import parse_url

        try:
            parse_url(cfg.cache.shared_tier_url)
        except ValueError as e:
            raise fail(str(e), "$.cache.shared_tier_url") from e
    _check_shared_tier(cfg.cache, fail)


def _check_shared_tier(cache: CacheConfig, fail: _Fail) -> None:
    """TLS files only with rediss://, a client certificate with its key, every file readable
    (opened by each worker at start), and deadlines a round trip can meet."""
    for name in ("timeout_s", "write_timeout_s", "connect_timeout_s"):
        if getattr(cache, f"shared_tier_{name}") <= 0:
            raise fail("must be above 0", f"$.cache.shared_tier_{name}")
    tls = ("tls_ca_file", "tls_cert_file", "tls_key_file")
    for name in tls:
        if getattr(cache, f"shared_tier_{name}") and not cache.shared_tier_url.startswith(
            "rediss://"
        ):
            raise fail(
                "TLS options need a rediss:// shared_tier_url", f"$.cache.shared_tier_{name}"
            )
    if bool(cache.shared_tier_tls_cert_file) != bool(cache.shared_tier_tls_key_file):
        raise fail(
            "a client certificate needs its key and a key its certificate",
            "$.cache.shared_tier_tls_cert_file",
        )
    for name in (*tls, "password_file"):
        value = getattr(cache, f"shared_tier_{name}")
        if value and not (os.path.isfile(value) and os.access(value, os.R_OK)):
            raise fail(f"cannot read {value!r}", f"$.cache.shared_tier_{name}")


def _check_blocklist(cfg: Config, fail: _Fail) -> None:
    if cfg.blocklist.oversize_policy not in ("spool-disk", "stream", "refuse"):
        raise fail(
            "oversize_policy must be 'spool-disk', 'stream' or 'refuse'",
            "$.blocklist.oversize_policy",
        )
    if cfg.blocklist.dir and not cfg.blocklist.public_key:
        raise fail("a blocklist dir needs public_key to verify versions", "$.blocklist.public_key")


def _check_gate(cfg: Config, fail: _Fail) -> None:
    """The gate holds sites on a signed roster: without a key to check it, it could hold only
    everything, so that is refused at start instead."""
    g = cfg.gate
    if not g.enabled:
        return
    if not (g.public_key or cfg.blocklist.public_key):
        raise fail("the gate needs public_key (or blocklist.public_key)", "$.gate.public_key")
    for value, path in [
        (g.public_key, "$.gate.public_key"),
        (g.holding_page_file, "$.gate.holding_page_file"),
    ] + [(s.holding_page_file, f"$.sites[{i}].holding_page_file") for i, s in enumerate(cfg.sites)]:
        if value and not os.path.isfile(value):
            raise fail(f"cannot read {value!r}", path)
    for status, path in (
        (g.held_status, "$.gate.held_status"),
        (g.holding_status, "$.gate.holding_status"),
    ):
        if not 200 <= status <= 599:
            raise fail("a status must be within 200..599", path)


def _check_fleet(cfg: Config, fail: _Fail) -> None:
    f = cfg.fleet
    if not f.redis_url:
        return
    from proxy.fleet.url import parse_redis_url

    try:
        parse_redis_url(f.redis_url)
        import redis.asyncio  # noqa: F401 - only to say at start what is missing
    except ImportError as e:
        raise fail(
            "the fleet needs redis-py: pip install 'edgeproxy[fleet]'", "$.fleet.redis_url"
        ) from e
    except ValueError as e:
        raise fail(str(e), "$.fleet.redis_url") from e
    if not cfg.blocklist.public_key:
        raise fail(
            "a fleet needs blocklist.public_key to verify versions", "$.blocklist.public_key"
        )
    if cfg.blocklist.dir:
        raise fail(
            "follow either a blocklist dir or a fleet feed, not both (the fleet keeps its "
            "versions in the state dir)",
            "$.blocklist.dir",
        )
    if f.block_s <= 0 or f.connect_timeout_s <= 0:
        raise fail("block_s and connect_timeout_s must be > 0", "$.fleet.block_s")
    for value, path in (
        (f.password_file, "$.fleet.password_file"),
        (f.tls_ca_file, "$.fleet.tls_ca_file"),
        (f.tls_cert_file, "$.fleet.tls_cert_file"),
        (f.tls_key_file, "$.fleet.tls_key_file"),
    ):
        if value and not os.access(value, os.R_OK):
            raise fail(f"cannot read {value!r}", path)
    if bool(f.tls_cert_file) != bool(f.tls_key_file):
        raise fail(
            "a client certificate needs its key and a key its certificate", "$.fleet.tls_cert_file"
        )


def _check_tls(cfg: Config, fail: _Fail) -> None:
    """Certificates and keys come in pairs; with `listen_tls` every one is loaded here, so a
    missing file, a non-PEM file or a key that does not match its certificate is reported at
    its field (at start, by check-config, and by a reload, which then keeps the running one)."""
    pairs = [(cfg.tls.cert_file, cfg.tls.key_file, "$.tls.cert_file")]
    pairs += [
        (s.tls_cert_file, s.tls_key_file, f"$.sites[{i}].tls_cert_file")
        for i, s in enumerate(cfg.sites)
    ]
    for cert, key, path in pairs:
        if bool(cert) != bool(key):
            raise fail("a certificate needs its key and a key its certificate", path)
    if not cfg.listen_tls:
        return
    if not any(cert for cert, _, _ in pairs):
        raise fail(
            "listen_tls needs a certificate: [tls] cert_file/key_file or a site's "
            "tls_cert_file/tls_key_file",
            "$.listen_tls",
        )
    from proxy.front.tls import CertificateError, Certificates

    try:
        Certificates.compile(certificate_specs(cfg))
    except CertificateError as e:
        raise fail(str(e), e.field or "$.tls.cert_file") from e


def certificate_specs(cfg: Config) -> list[CertSpec]:
    """What the TLS listener serves: each site's own certificate for its host names, then the
    default one (`[tls] cert_file`) for every other name and for handshakes without SNI."""
    specs = []
    if cfg.tls.cert_file:  # first: it is the default even if a site lists host "*"
        specs.append(CertSpec(("*",), cfg.tls.cert_file, cfg.tls.key_file, "$.tls.cert_file"))
    specs += [
        CertSpec(tuple(s.hosts), s.tls_cert_file, s.tls_key_file, f"$.sites[{i}].tls_cert_file")
        for i, s in enumerate(cfg.sites)
        if s.tls_cert_file
    ]
    return specs


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _check_numbers(obj: msgspec.Struct, path: str, fail: _Fail) -> None:
    """Every number in every section is finite and not negative: walks the Structs, so a field
    added later is covered without anyone remembering to list it (NaN and inf pass msgspec's
    float type, and a negative count or deadline has no meaning anywhere here)."""
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        where = f"{path}.{name}"
        if isinstance(value, msgspec.Struct):
            _check_numbers(value, where, fail)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, msgspec.Struct):
                    _check_numbers(item, f"{where}[{i}]", fail)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise fail(f"{name} must be a finite number, got {value}", where)
            if value < 0:
                raise fail(f"{name} must not be negative, got {value}", where)


def _valid_host(host: str) -> bool:
    """`*`, `*.suffix` or a DNS name (IDNA allowed), as the admit phase can match it."""
    if host == "*":
        return True
    name = host[2:] if host.startswith("*.") else host
    name = name.rstrip(".")
    if not name:
        return False
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return False
    if ascii_name.startswith("[") and ascii_name.endswith("]"):
        return False
    return all(_LABEL.fullmatch(label) for label in ascii_name.split("."))


def _valid_link_url(value: str) -> bool:
    """Pasted between `<` and `>` in a Link field: nothing in it may end or split the field."""
    if any(c in value for c in '<>"\\ ') or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return False
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", str(path)) from e
    try:
        cfg = msgspec.toml.decode(text.encode(), type=Config)
    except msgspec.ValidationError as e:
        msg, _, where = str(e).partition(" - at ")
        field = where.strip("`")
        raise ConfigError(msg, str(path), _locate(text, field, msg), field) from e
    except msgspec.DecodeError as e:
        line = None
        m = re.search(r"line (\d+)", str(e))
        if m:
            line = int(m.group(1))
        raise ConfigError(f"not valid TOML: {e}", str(path), line) from e
    return validate(cfg, file=str(path), text=text)


def _locate(text: str, path: str, msg: str = "") -> int | None:
    """Best-effort line of a msgspec path like `$.sites[1].origin` in TOML text."""
    parts = re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", path)
    keys: list[str | int] = [k if k else int(i) for k, i in parts]
    unknown = re.search(r"unknown field `([^`]+)`", msg)
    if unknown:
        keys.append(unknown.group(1))
    if not keys:
        return None
    lines = text.splitlines()
    table: list[str | int] = []
    counts: dict[str, int] = {}
    best: int | None = None
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if m := re.fullmatch(r"\[\[\s*([\w.-]+)\s*\]\]", line):
            name = m.group(1)
            counts[name] = counts.get(name, -1) + 1
            table = [*name.split("."), counts[name]]
            if table == keys[: len(table)]:
                best = n
            continue
        if m := re.fullmatch(r"\[\s*([\w.-]+)\s*\]", line):
            table = list(m.group(1).split("."))
            if table == keys[: len(table)]:
                best = n
            continue
        if m := re.match(r"([\w-]+)\s*=", line):
            full = [*table, m.group(1)]
            if full == keys[: len(full)]:
                best = n
                if len(full) == len(keys):
                    return n
    return best


def from_flags(
    *,
    listen: str,
    origin: str,
    admin: str,
    workers: int,
    base: Config | None = None,
) -> Config:
    """`serve --origin URL` with no config file: one site that takes every Host."""
    base = base or Config()
    sites = [Site(name="default", hosts=["*"], origin=origin)] if origin else base.sites
    cfg = msgspec.structs.replace(
        base,
        listen=listen or base.listen,
        workers=workers if workers >= 0 else base.workers,
        sites=sites,
        admin=msgspec.structs.replace(
            base.admin, listen=admin if admin is not None else base.admin.listen
        ),
    )
    return validate(cfg)
