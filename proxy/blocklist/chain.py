"""Which deltas of a blocklist directory a node applies as changes over a compiled table,
without compiling the list again (issue 12).

A full version's table costs a node ~10 µs an entry to compile (100 s at 10M entries, hours
at 100M), unless its signer shipped it (`proxy.blocklist.shipped`): then it is verified and
mapped. The deltas over it are small, and each is applied as changes over the table (a probe
per id it names, `NodeBlocklist._changes_of`), whether one delta was dropped, several at
once, or the node starts with the full version and its deltas in the directory (or with the
enforced version's table kept in its state). `chain_in` finds, from the files' unverified
headers alone, the chain of deltas from the directory's newest version down to the enforced
version or to a newer full version; `read_links` reads and verifies each delta (signature,
header, the sequence it rests on), oldest first, and stops the chain at the first that fails,
so the newest version whose whole chain holds is enforced, as when the compile job reads the
directory (`format.load_newest`). Anything less plain (rival files at a sequence, an
unreadable header, a missing base, deltas larger than `delta_max_fraction` of the list: the
supervisor would hold their entries) goes to the compile job, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.blocklist.format import (
    MAX_DELTA_CHAIN,
    BlocklistError,
    Header,
    Version,
    list_versions,
    peek_header,
    read_version,
)


@dataclass(frozen=True, slots=True)
class Chain:
    """The directory's newest version as a base (the enforced version, or a newer full one)
    and the deltas over it, oldest first, as their headers claim (unverified: what to read,
    never what to enforce; each file is verified when it is read)."""

    base: Path
    header: Header  # the base's
    links: list[tuple[Path, Header]]
    on_enforced: bool  # the base is the enforced file version (full or not): nothing to load


def chain_in(
    directory: str,
    current: tuple[int, str] | None,
    *,
    entries: int,
    max_fraction: float,
    max_step: int,
    require_valid_until: bool,
) -> Chain | None:
    """The chain to apply as changes over a table (the enforced one, or the base's, taken
    from its signer or compiled once), when the directory is plain: every file's header
    readable, one file per sequence from the newest down to the enforced version (`current`:
    sequence and sha256; of `entries` entries) or to a newer full version, and deltas with
    no more lines in all than `max_fraction` of the base's entries (the supervisor reads
    them, and workers hold them in their overlay). None otherwise: the compile job reads the
    directory as always and reports what is wrong with it."""
    claims: dict[int, list[tuple[Path, Header]]] = {}
    for path in list_versions(directory):
        header = peek_header(path)
        if header is None:
            return None
        claims.setdefault(header.sequence, []).append((path, header))
    if not claims:
        return None
    links: list[tuple[Path, Header]] = []
    sequence = max(claims)
    while True:
        if len(claims.get(sequence, ())) != 1:
            return None  # a missing base or rival claims
        path, header = claims[sequence][0]
        if header.base is None or (current is not None and sequence <= current[0]):
            break
        if len(links) >= MAX_DELTA_CHAIN:
            return None
        links.append((path, header))
        sequence = header.base
    links.reverse()
    on_enforced = current is not None and header.sequence == current[0]
    if current is not None:
        if header.sequence < current[0] or (on_enforced and header.sha256 != current[1]):
            return None
        top = links[-1][1] if links else header
        if max_step > 0 and top.sequence - current[0] > max_step:
            return None
    checked = [h for _, h in links] + ([] if on_enforced else [header])
    if require_valid_until and any(h.valid_until is None for h in checked):
        return None
    size = entries if on_enforced else header.entries
    if sum(h.entries for _, h in links) > max_fraction * max(1, size):
        return None
    return Chain(path, header, links, on_enforced)


def read_links(
    chain: Chain, public_key: bytes, max_bytes: int
) -> tuple[list[Version], list[BlocklistError]]:
    """The chain's deltas, read and verified here (small: `chain_in` bounds their lines),
    oldest first as far as none fails; every failure, and every delta after one (its base
    is invalid), refused. So the newest version whose whole chain holds is enforced, as
    the compile job's reading of the directory would."""
    good: list[Version] = []
    errors: list[BlocklistError] = []
    for path, header in chain.links:
        try:
            v = read_version(path, public_key, max_bytes=max_bytes)
        except BlocklistError as e:
            errors.append(e)
            continue
        if (v.sequence, v.base) != (header.sequence, header.base):
            errors.append(BlocklistError(path, 1, "replaced while it was read"))
        elif errors:
            errors.append(
                BlocklistError(
                    path,
                    1,
                    f"delta base sequence {v.base} not found or invalid in {chain.base.parent}",
                )
            )
        else:
            good.append(v)
    return good, errors
