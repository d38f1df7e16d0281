"""The go-live gate: a site's Host is served only once its customer is verified (issue 15).

The takedown service decides which hosts may go live (customer identity checked to the
configured level, domain control validated) and publishes that decision as a signed **site
roster**: a full list, not a delta, with a sequence that only grows. An edge with `[gate]
enabled` holds every host the newest good roster does not name: 421, or the site's holding
page. The roster travels the way blocklist versions do: a file dropped into `gate.roster_dir`
(the service writes there, or an operator copies it), or pushed to the admin API (`PUT
/gate/roster`), which verifies it and writes it into the same directory.

    {"format":"edgeproxy-roster/1","sequence":1733500000123,"created_at":…,"hosts":["a.example"]}
    {"signature":"<base64 Ed25519 over the first line, newline included>","key_id":"…"}

The signature and key are the blocklist's (`proxy/blocklist/format.py`: same Ed25519 key, same
signature line), so a node that trusts a publisher's blocklist trusts its roster. Enforcement
never weakens: a roster that fails its signature, is older than the one held, or cannot be
read is refused and the last good one kept; with no good roster at all, every host is held.

Each worker reads the directory itself: at start (a restarted worker holds what its siblings
hold before it serves a request), when the admin API tells it to (`gate.reload` on the control
channel, after a push; the push is answered once every worker holds the roster), and every
`poll_interval_s` (a stat, a read only when the files changed) for files dropped there. Challenge paths
(`/.well-known/edgeproxy-challenge/…`) pass a held site, so domain-control validation through
the edge works before the site is live.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from proxy.blocklist import format as blformat

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.context import RequestCtx

FORMAT_TAG = "edgeproxy-roster/1"
PREFIX = "roster-"
SUFFIX = ".json"
KEEP_FILES = 5  # older roster files beyond these are removed when a new one is written

log = logging.getLogger("edgeproxy.gate")


class RosterError(Exception):
    """A roster file or body the edge refuses; str() says which and why."""


class RosterHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    sequence: int
    created_at: float
    hosts: list[str]


@dataclass(frozen=True, slots=True)
class Roster:
    """One verified roster: the hosts that may go live (`*.suffix` covers subdomains)."""

    sequence: int
    created_at: float
    hosts: frozenset[str]
    suffixes: frozenset[str] = frozenset()  # ".shop.example" for "*.shop.example"
    key_id: str = ""

    @classmethod
    def of(
        cls, sequence: int, hosts: Iterable[str], created_at: float = 0.0, key_id: str = ""
    ) -> Roster:
        exact: set[str] = set()
        suffixes: list[str] = []
        for h in hosts:
            h = h.strip().lower().rstrip(".")
            if h.startswith("*."):
                suffixes.append(h[1:])
            elif h:
                exact.add(h)
        return cls(sequence, created_at, frozenset(exact), frozenset(suffixes), key_id)

    def live(self, host: str) -> bool:
        """`host` as admit canonicalises it: lowercase, no port, no trailing dot."""
        if host in self.hosts:
            return True
        if not self.suffixes:
            return False
        i = host.find(".")
        while i > 0:  # one set lookup per label, however many wildcards there are
            if host[i:] in self.suffixes:
                return True
            i = host.find(".", i + 1)
        return False


EMPTY = Roster(0, 0.0, frozenset())


def roster_filename(sequence: int) -> str:
    return f"{PREFIX}{sequence:016d}{SUFFIX}"


def render_roster(
    sequence: int, hosts: Iterable[str], private_key_pem: bytes, created_at: float | None = None
) -> bytes:
    """The signed roster file: a header line and the blocklist's signature line."""
    if not 1 <= sequence <= blformat.MAX_SEQUENCE:
        raise ValueError(f"sequence must be within 1..{blformat.MAX_SEQUENCE}")
    header = RosterHeader(
        FORMAT_TAG,
        sequence,
        time.time() if created_at is None else created_at,
        sorted({h.strip().lower().rstrip(".") for h in hosts if h.strip()}),
    )
    body = msgspec.json.encode(header) + b"\n"
    return body + blformat.signature_line(body, private_key_pem)


def parse_roster(data: bytes, public_key_pem: bytes, *, name: str = "roster") -> Roster:
    """Verify the signature before reading anything else; raises `RosterError`."""
    path = Path(name)
    try:
        lines = blformat._split_lines(path, data)
        if len(lines) != 2:
            raise RosterError(f"{name}: expected a header and a signature line, got {len(lines)}")
        public = blformat._public_key(public_key_pem)
        key_id = blformat._verify(path, lines, public, blformat.key_id(public))
    except blformat.BlocklistError as exc:
        raise RosterError(str(exc)) from None
    except ValueError as exc:  # the configured key is not an Ed25519 public key
        raise RosterError(f"{name}: {exc}") from None
    try:
        header = msgspec.json.decode(lines[0], type=RosterHeader)
    except msgspec.DecodeError as exc:
        raise RosterError(f"{name}: malformed header: {exc}") from None
    if header.format != FORMAT_TAG:
        raise RosterError(f"{name}: unknown format {header.format!r}, expected {FORMAT_TAG}")
    if not 1 <= header.sequence <= blformat.MAX_SEQUENCE:
        raise RosterError(f"{name}: sequence out of range")
    return Roster.of(header.sequence, header.hosts, header.created_at, key_id)


def roster_files(directory: Path) -> list[Path]:
    """Roster files, newest name (highest sequence) first."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(PREFIX) and n.endswith(SUFFIX)]
    except OSError:
        return []
    return [directory / n for n in sorted(names, reverse=True)]


def newest_valid(
    directory: Path, public_key_pem: bytes, max_bytes: int
) -> tuple[Roster | None, list[str]]:
    """The newest roster in `directory` that verifies, and why each newer file was refused."""
    errors: list[str] = []
    for path in roster_files(directory):
        try:
            data = blformat._read_bounded(path, max_bytes)
            return parse_roster(data, public_key_pem, name=str(path)), errors
        except (RosterError, blformat.BlocklistError) as exc:
            errors.append(str(exc))
    return None, errors


def write_roster(directory: Path, data: bytes, sequence: int) -> Path:
    """Atomically write a (verified) roster and prune the oldest beyond `KEEP_FILES`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / roster_filename(sequence)
    blformat.write_atomic(path, data)
    names = sorted(n for n in os.listdir(directory) if n.startswith(PREFIX) and n.endswith(SUFFIX))
    for old in names[:-KEEP_FILES]:
        (directory / old).unlink(missing_ok=True)
    return path


@dataclass(slots=True)
class Gate:
    """A worker's gate: the roster it enforces and what a held host is answered."""

    directory: Path
    public_key_pem: bytes
    max_bytes: int
    challenge_prefix: str
    held_status: int
    holding_status: int
    holding_pages: dict[int, bytes]  # site index -> page; -1: the gate's default page
    roster: Roster = EMPTY
    on_swap: Callable[[], None] | None = None
    failures: int = 0
    last_error: str = ""
    _seen: tuple[tuple[str, int, int], ...] | None = field(default=None, repr=False)

    def holds(self, host: str, raw_path: str) -> bool:
        if raw_path.startswith(self.challenge_prefix):
            return False  # domain-control validation reaches the origin of a held site
        return not self.roster.live(host)

    def page(self, site_index: int) -> bytes | None:
        return self.holding_pages.get(site_index, self.holding_pages.get(-1))

    def reload(self) -> bool:
        """Take the directory's newest good roster if it is newer than the held one; True when
        it took effect. Refused files are logged and counted; the held roster stays."""
        files = roster_files(self.directory)[:KEEP_FILES]
        try:
            seen = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        except OSError:
            return False  # a file replaced while listed: the next poll sees it settled
        if seen == self._seen:
            return False
        self._seen = seen
        new, errors = newest_valid(self.directory, self.public_key_pem, self.max_bytes)
        for err in errors:
            self.failures += 1
            self.last_error = err
            log.error("site roster refused, keeping sequence %d: %s", self.roster.sequence, err)
        if new is None or new.sequence <= self.roster.sequence:
            return False
        self.roster = new
        if self.on_swap is not None:
            self.on_swap()  # remembered answers were given under the old roster
        log.info("site roster %d applied: %d hosts live", new.sequence, len(new.hosts))
        return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.reload()
            except Exception:  # never let the watcher die: the held roster keeps enforcing
                log.exception("reading the site roster failed")


def roster_dir(cfg: Config) -> Path:
    from proxy.config import default_state_dir

    if cfg.gate.roster_dir:
        return Path(cfg.gate.roster_dir)
    return Path(cfg.state_dir or default_state_dir()) / "gate"


def public_key_of(cfg: Config) -> bytes:
    return Path(cfg.gate.public_key or cfg.blocklist.public_key).read_bytes()


def build_gate(cfg: Config) -> Gate | None:
    """The worker's gate with the newest good roster already loaded (None when off): a worker
    never serves a request before it knows which hosts are live."""
    g = cfg.gate
    if not g.enabled:
        return None
    pages: dict[int, bytes] = {}
    if g.holding_page_file:
        pages[-1] = Path(g.holding_page_file).read_bytes()
    for i, s in enumerate(cfg.sites):
        if s.holding_page_file:
            pages[i] = Path(s.holding_page_file).read_bytes()
    gate = Gate(
        directory=roster_dir(cfg),
        public_key_pem=public_key_of(cfg),
        max_bytes=g.max_roster_bytes,
        challenge_prefix=g.challenge_path_prefix,
        held_status=g.held_status,
        holding_status=g.holding_status,
        holding_pages=pages,
    )
    gate.reload()
    return gate


def hold(ctx: RequestCtx, gate: Gate, via_name: str) -> None:
    """Answer a held host: its site's holding page, else `held_status` (421 by default: this
    edge does not serve the host yet, as for a host it does not know)."""
    from proxy.phases import deliver
    from proxy.rfc.cache_status import cache_status_bytes

    page = gate.page(ctx.site_index)
    detail = "site-not-live"
    if page is None:
        deliver.refused(ctx, gate.held_status, "site not live on this edge yet", via_name)
        return
    cache_status = cache_status_bytes(via_name, hit=False, detail=detail)
    deliver.generated(
        ctx,
        gate.holding_status,
        page,
        cache_status=cache_status,
        content_type=b"text/html; charset=utf-8",
    )
