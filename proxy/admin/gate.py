"""Admin routes of the go-live gate (proxy/gate.py): receive a signed site roster, show the
one held.

    PUT /gate/roster   {"roster": "<the signed roster file's text>"}  (bearer token)
                       200 {"sequence", "hosts", "applied_at", "workers"} once every worker
                       holds it; 400 bad signature or format, 409 older than the held one,
                       404 when the gate is off, 503 when a worker did not take it
    GET /gate          {"enabled", "sequence", "hosts", "created_at", "directory"}

A pushed roster is verified here with the gate's key, written into `gate.roster_dir`, and every
worker is told to take it (`gate.reload` on the control channel; each verifies it again); the
answer waits for all of them, so the takedown service's delivery record means "enforced on
every worker". Workers also poll the directory (`gate.poll_interval_s`) for files dropped there
directly. A roster that fails is refused with the reason and the held one stays in force.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
from aiohttp import web

from proxy import gate
from proxy.admin.guard import _body, _error, _json, _node, authenticated
from proxy.node.control import ControlError


class RosterBody(msgspec.Struct, forbid_unknown_fields=True):
    roster: str


def _held(directory: Path, key: bytes, max_bytes: int) -> gate.Roster:
    """The roster the workers hold: the directory's newest one that verifies."""
    return gate.newest_valid(directory, key, max_bytes)[0] or gate.EMPTY


@authenticated
async def put_roster(request: web.Request) -> web.Response:
    cfg = _node(request).cfg
    if not cfg.gate.enabled:
        return _error(404, "the gate is off on this edge ([gate] enabled = false)")
    body = await _body(request, RosterBody)
    data = body.roster.encode()
    if len(data) > cfg.gate.max_roster_bytes:
        return _error(413, f"roster exceeds {cfg.gate.max_roster_bytes} bytes")
    key = gate.public_key_of(cfg)
    try:
        new = gate.parse_roster(data, key, name="pushed roster")
    except gate.RosterError as exc:
        return _error(400, str(exc))
    directory = gate.roster_dir(cfg)
    held = await asyncio.to_thread(_held, directory, key, cfg.gate.max_roster_bytes)
    if new.sequence < held.sequence:
        return _error(409, f"sequence {new.sequence} is older than the held {held.sequence}")
    if new.sequence > held.sequence:
        try:
            await asyncio.to_thread(gate.write_roster, directory, data, new.sequence)
        except OSError as exc:  # the held roster stays in force; the publisher retries
            return _error(503, f"cannot write {directory}: {exc.strerror or exc}")
    # Answered once every worker holds it (or a newer one): the publisher's proof.
    try:
        acks = await _node(request).broadcast("gate.reload", {})
    except ControlError as exc:
        return _error(503, f"not applied on every worker: {exc}")
    behind = [a["worker"] for a in acks if a["version"] < new.sequence]
    if behind:
        return _error(503, f"workers {behind} did not take roster {new.sequence}")
    return _json(
        {
            "sequence": new.sequence,
            "hosts": len(new.hosts),
            "applied_at": time.time(),
            "workers": [{"worker": a["worker"], "sequence": a["version"]} for a in acks],
        }
    )


async def get_gate(request: web.Request) -> web.Response:
    cfg = _node(request).cfg
    if not cfg.gate.enabled:
        return _json({"enabled": False})
    directory = gate.roster_dir(cfg)
    held = await asyncio.to_thread(
        _held, directory, gate.public_key_of(cfg), cfg.gate.max_roster_bytes
    )
    return _json(
        {
            "enabled": True,
            "sequence": held.sequence,
            "created_at": held.created_at,
            "hosts": sorted(held.hosts) + sorted(f"*{s}" for s in held.suffixes),
            "directory": str(directory),
        }
    )


def routes() -> list[web.RouteDef]:
    return [web.put("/gate/roster", put_roster), web.get("/gate", get_gate)]
