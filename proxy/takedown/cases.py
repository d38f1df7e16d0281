"""Cases: the state machine, intake, decisions, and what becomes a blocklist entry.

Every function here that takes a connection runs inside one transaction on the store thread
and appends the audit record for each change it makes, so a state and the event that explains
it are committed together or not at all.

    received      -> incomplete | validated | rejected (no served target)
    incomplete    -> validated (a complete notice for the same targets joins) | ...
    validated     -> actioned (trusted submitter) | under_review -> actioned | rejected
    actioned      -> published -> enforced (every edge acknowledged)
    actioned, published, enforced -> restore_scheduled -> restored | litigation_hold
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.takedown import audit, notify, strikes
from proxy.takedown.accounts import Account, Role
from proxy.takedown.config import TakedownConfig
from proxy.takedown.elements import NOTICE_ELEMENTS, Checked, LegalBasis, Target, TargetKind
from proxy.takedown.publications import create_publication
from proxy.takedown.states import (
    DECIDABLE,
    OPEN,
    Conflict,
    NotFound,
    S,
    State,
    actor_of,
    iso,
    transition,
)


@dataclass(slots=True)
class Outcome:
    """What a transaction decided, and the publications it created for the publisher."""

    result: dict[str, Any] = field(default_factory=dict)
    publications: list[int] = field(default_factory=list)


def site_of(conn: sqlite3.Connection, t: Target) -> str | None:
    """The served site a target belongs to: `host:port` if registered so, else `host`."""
    for key in dict.fromkeys((t.authority, t.host)):
        if key and conn.execute("SELECT 1 FROM sites WHERE host = ?", (key,)).fetchone():
            return key
    return None


def _screen(conn: sqlite3.Connection, t: Target) -> tuple[str | None, str | None]:
    """(why this target is rejected or None to accept it, the site it belongs to)."""
    if t.error:
        return t.error, None
    site = site_of(conn, t)
    if t.kind is TargetKind.URL and site is None:
        return f"host {t.authority or t.host} is not served by this service", None
    return _edge_refuses(t), site


def _edge_refuses(t: Target) -> str | None:
    """What the edge's own entry validation would say, so no entry is published that every
    edge would refuse (and the submitter hears about it now, not never)."""
    try:
        from proxy.blocklist.model import Entry, EntryType, InvalidEntry, validate_entry
    except ImportError:  # a takedown-only install: the edges validate on load
        return None
    assert t.kind is not None and t.value is not None
    try:
        validate_entry(Entry(id="target", type=EntryType(t.kind.value), value=t.value))
    except InvalidEntry as exc:
        return f"the edge cannot enforce this target: {exc.reason}"
    return None


def _find_case(conn: sqlite3.Connection, keys: set[tuple[str, str]]) -> tuple[int, State] | None:
    """An open case this notice duplicates (its targets are a subset) or completes."""
    if not keys:
        return None
    marks = ",".join("?" * len(OPEN))
    candidates: set[int] = set()
    for kind, value in keys:
        for r in conn.execute(
            f"SELECT DISTINCT t.case_id FROM targets t JOIN cases c ON c.id = t.case_id"
            f" WHERE t.kind = ? AND t.value = ? AND t.accepted = 1 AND c.state IN ({marks})",
            (kind, value, *OPEN),
        ):
            candidates.add(r[0])
    for cid in sorted(candidates):
        state = State(conn.execute("SELECT state FROM cases WHERE id = ?", (cid,)).fetchone()[0])
        have = _accepted_keys(conn, cid)
        if keys <= have or (state is S.INCOMPLETE and have <= keys):
            return cid, state
    return None


def _accepted_keys(conn: sqlite3.Connection, case_id: int) -> set[tuple[str, str]]:
    return {
        (r[0], r[1])
        for r in conn.execute(
            "SELECT kind, value FROM targets WHERE case_id = ? AND accepted = 1", (case_id,)
        )
    }


def intake(
    conn: sqlite3.Connection,
    now: float,
    account: Account,
    raw: bytes,
    raw_sha256: str,
    remote: str | None,
    checked: Checked,
    cfg: TakedownConfig,
    edges: Sequence[str],
) -> Outcome:
    """One notice in: recorded as received, put on a new case or on the open one it duplicates
    or completes, its targets recorded, the case moved on; the answer is the submitter's receipt.

    The notice is stored before it is judged, so one that is refused or incomplete is on record
    too, with the receipt that was sent for it."""
    out = Outcome()
    basis = checked.legal_basis.value if checked.legal_basis else None
    screened = [(t, *_screen(conn, t)) for t in checked.targets]
    nid = _record_notice(conn, now, account, raw, raw_sha256, remote, checked, basis)
    actor = actor_of(account)
    keys = {(t.kind.value, t.value) for t, why, _ in screened if why is None and t.kind and t.value}
    trusted = account.role is Role.TRUSTED
    found = _find_case(conn, keys) if checked.complete else None
    if found is None:
        cid = _open_case(conn, now, actor, nid, basis, trusted)
        state = S.RECEIVED
    else:
        cid, state = found
        _join_case(conn, now, actor, nid, cid, trusted)
    conn.execute("UPDATE notices SET case_id = ? WHERE id = ?", (cid, nid))
    target_report = _record_targets(conn, nid, cid, screened, joining=found is not None)
    audit.append(
        conn,
        now,
        "receipt_sent",
        case_id=cid,
        actor="system",
        data={"notice": nid, "deadline_s": cfg.deadlines.receipt_s},
    )
    if not checked.complete:
        next_step = _hold_incomplete(conn, cid, state, now, checked, cfg)
    elif not keys:
        next_step = _reject_unserved(conn, cid, state, now)
    else:
        next_step, out.publications = _validate_and_route(
            conn, cid, state, now, account, basis, trusted, cfg, edges
        )
    out.result = {
        "id": nid,
        "case": cid,
        "state": state_of(conn, cid).value,
        "missing": checked.missing,
        "missing_detail": checked.missing_detail(NOTICE_ELEMENTS),
        "targets": target_report,
        "receipt": {
            "notice": nid,
            "case": cid,
            "received_at": now,
            "received_at_iso": iso(now),
            "bytes": len(raw),
            "sha256": raw_sha256,
            "legal_basis": basis,
            "complainant": (checked.doc or {}).get("complainant"),
            "works": len((checked.doc or {}).get("works") or []),
            "targets": target_report,
            "complete": checked.complete,
            "missing": checked.missing,
            "next_step": next_step,
        },
    }
    # DSA 16(4): the receipt is also sent to the notifier's electronic contact.
    notify.enqueue(
        conn, now, notify.Kind.RECEIPT, cid, {"receipt": out.result["receipt"]}, notice_id=nid
    )
    return out


def _record_notice(
    conn: sqlite3.Connection,
    now: float,
    account: Account,
    raw: bytes,
    raw_sha256: str,
    remote: str | None,
    checked: Checked,
    basis: str | None,
) -> int:
    """The notice exactly as received, before anything is decided about it."""
    nid = conn.execute(
        "INSERT INTO notices (account_id, received_at, remote, raw, raw_sha256, complete,"
        " missing, legal_basis, parsed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account.id,
            now,
            remote,
            raw,
            raw_sha256,
            int(checked.complete),
            json.dumps(checked.missing),
            basis,
            json.dumps(checked.doc, ensure_ascii=False) if checked.doc is not None else None,
        ),
    ).lastrowid
    assert nid is not None
    audit.append(
        conn,
        now,
        "notice_received",
        actor=actor_of(account),
        data={
            "notice": nid,
            "sha256": raw_sha256,
            "bytes": len(raw),
            "complete": checked.complete,
            "missing": checked.missing,
            "legal_basis": basis,
            "remote": remote,
        },
    )
    return nid


def _open_case(
    conn: sqlite3.Connection, now: float, actor: str, nid: int, basis: str | None, trusted: bool
) -> int:
    cid = conn.execute(
        "INSERT INTO cases (state, legal_basis, received_at, trusted) VALUES (?, ?, ?, ?)",
        (S.RECEIVED.value, basis, now, int(trusted)),
    ).lastrowid
    assert cid is not None
    audit.append(
        conn,
        now,
        S.RECEIVED.value,
        case_id=cid,
        actor=actor,
        data={"notice": nid, "legal_basis": basis, "trusted": trusted},
    )
    return cid


def _join_case(
    conn: sqlite3.Connection, now: float, actor: str, nid: int, cid: int, trusted: bool
) -> None:
    """A trusted submitter's notice makes the case trusted: its statement of reasons then names a
    trusted flagger as the source (DSA Art. 22)."""
    audit.append(
        conn,
        now,
        "notice_joined",
        case_id=cid,
        actor=actor,
        data={"notice": nid, "trusted": trusted},
    )
    if trusted:
        conn.execute("UPDATE cases SET trusted = 1 WHERE id = ?", (cid,))


def _record_targets(
    conn: sqlite3.Connection,
    nid: int,
    cid: int,
    screened: list[tuple[Target, str | None, str | None]],
    *,
    joining: bool,
) -> list[dict[str, Any]]:
    """Every target is kept with the notice, but one the joined case already has is not added to
    the case a second time (it would become a second blocklist entry). Returns the receipt's
    line for each target."""
    have = _accepted_keys(conn, cid)
    target_report = []
    for t, why, site in screened:
        joined = joining and t.kind is not None and (t.kind.value, t.value) in have
        conn.execute(
            "INSERT INTO targets (notice_id, case_id, kind, value, raw, host, accepted, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                nid,
                None if joined else cid,
                t.kind.value if t.kind else None,
                t.value,
                t.raw,
                site,
                int(why is None),
                why,
            ),
        )
        item: dict[str, Any] = {
            "target": json.loads(t.raw),
            "status": "accepted" if why is None else "rejected",
        }
        if why is not None:
            item["reason"] = why
        target_report.append(item)
    return target_report


def _hold_incomplete(
    conn: sqlite3.Connection,
    cid: int,
    state: State,
    now: float,
    checked: Checked,
    cfg: TakedownConfig,
) -> str:
    if state is S.RECEIVED:
        transition(
            conn,
            cid,
            S.INCOMPLETE,
            now,
            "system",
            {"missing": checked.missing, "fix_by": now + cfg.deadlines.fix_request_s},
        )
    return (
        "The notice is kept but incomplete: send a complete notice with the missing elements"
        " (the same targets join this case). 17 U.S.C. 512(c)(3)(B)(ii)."
    )


def _reject_unserved(conn: sqlite3.Connection, cid: int, state: State, now: float) -> str:
    if state is S.RECEIVED:
        _decided(conn, cid, now, "system", "reject", True)
        transition(
            conn,
            cid,
            S.REJECTED,
            now,
            "system",
            {"reason": "no target is served by this service", "automated": True},
        )
        conn.execute(
            "UPDATE cases SET decided_at = ?, decision = 'reject', decision_reason = ?,"
            " automated = 1 WHERE id = ?",
            (now, "no target is served by this service", cid),
        )
    return "Rejected: none of the targets is served by this service."


def _validate_and_route(
    conn: sqlite3.Connection,
    cid: int,
    state: State,
    now: float,
    account: Account,
    basis: str | None,
    trusted: bool,
    cfg: TakedownConfig,
    edges: Sequence[str],
) -> tuple[str, list[int]]:
    """A complete notice with a served target: a trusted submitter's case is actioned at once,
    anyone else's waits for an operator. Returns the receipt's next step and the publications."""
    if state in (S.RECEIVED, S.INCOMPLETE):
        conn.execute(
            "UPDATE cases SET validated_at = ?, legal_basis = ? WHERE id = ?", (now, basis, cid)
        )
        transition(conn, cid, S.VALIDATED, now, "system")
        state = S.VALIDATED
    if trusted and state in DECIDABLE:
        publications = action(
            conn, cid, now, account, "trusted submitter", automated=True, cfg=cfg, edges=edges
        )
        return "Actioned automatically (trusted submitter); publishing to the edges.", publications
    if state is S.VALIDATED:
        transition(
            conn,
            cid,
            S.UNDER_REVIEW,
            now,
            "system",
            {"decide_by": now + cfg.deadlines.decision_s},
        )
        return (
            f"Under review: an operator decides within {cfg.deadlines.decision_s / 3600:g} h.",
            [],
        )
    return f"Joined case {cid}, which is {state_of(conn, cid).value}.", []


def state_of(conn: sqlite3.Connection, case_id: int) -> State:
    return State(conn.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()[0])


def block_entries(conn: sqlite3.Connection, case_id: int) -> list[dict[str, str]]:
    row = conn.execute("SELECT legal_basis FROM cases WHERE id = ?", (case_id,)).fetchone()
    titles: list[str] = []
    for (parsed,) in conn.execute(
        "SELECT parsed FROM notices WHERE case_id = ? AND complete = 1", (case_id,)
    ):
        for w in (json.loads(parsed) or {}).get("works") or []:
            title = str(w.get("title") or w.get("description") or "")
            if title and title not in titles:
                titles.append(title)
    basis = {
        LegalBasis.HOSTED.value: "hosted content",
        LegalBasis.CACHE.value: "cached copy removed at origin",
        LegalBasis.ORDER.value: "court or authority order",
    }.get(row["legal_basis"] or "", "")
    reason = f"copyright notice ({basis}): {'; '.join(titles)}"[:500]
    return [
        {
            "id": f"case{case_id}-t{r['id']}",
            "type": r["kind"],
            "value": r["value"],
            "notice": f"case {case_id}",
            "reason": reason,
        }
        for r in conn.execute(
            "SELECT id, kind, value FROM targets WHERE case_id = ? AND accepted = 1 ORDER BY id",
            (case_id,),
        )
    ]


def _decided(
    conn: sqlite3.Connection, case_id: int, now: float, actor: str, decision: str, auto: bool
) -> None:
    """The decision itself (DSA 16(5)/(6): what, when, by whom, whether automated)."""
    audit.append(
        conn,
        now,
        "decided",
        case_id=case_id,
        actor=actor,
        data={"decision": decision, "automated": auto},
    )


def action(
    conn: sqlite3.Connection,
    case_id: int,
    now: float,
    account: Account | None,
    reason: str,
    *,
    automated: bool,
    cfg: TakedownConfig,
    edges: Sequence[str],
) -> list[int]:
    """Decide to disable access: the block publication, then strikes (which may suspend)."""
    conn.execute(
        "UPDATE cases SET decided_at = ?, decision = 'action', decision_reason = ?,"
        " decided_by = ?, automated = ? WHERE id = ?",
        (now, reason, account.id if account else None, int(automated), case_id),
    )
    _decided(conn, case_id, now, actor_of(account), "action", automated)
    transition(
        conn,
        case_id,
        S.ACTIONED,
        now,
        actor_of(account),
        {"reason": reason, "automated": automated},
    )
    pubs = [
        create_publication(
            conn, "block", now, edges, entries=block_entries(conn, case_id), case_id=case_id
        )
    ]
    pubs += strikes.record(conn, case_id, now, cfg.strikes, edges)
    # DSA 17(2): the statement of reasons is due at the latest when the restriction applies.
    audit.append(
        conn, now, "statement_issued", case_id=case_id, data={"url": f"/cases/{case_id}/statement"}
    )
    # 512(g)(2)(A): the customer is told promptly that access to its material was disabled.
    notify.enqueue(
        conn,
        now,
        notify.Kind.TAKEDOWN,
        case_id,
        {
            "targets": [e["value"] for e in block_entries(conn, case_id)],
            "reason": reason,
            "automated": automated,
            "statement_of_reasons": f"/cases/{case_id}/statement",
            "counter_notice": f"/cases/{case_id}/counter-notice",
        },
    )
    return pubs


def decide(
    conn: sqlite3.Connection,
    case_id: int,
    now: float,
    account: Account,
    decision: str,
    reason: str,
    cfg: TakedownConfig,
    edges: Sequence[str],
) -> Outcome:
    row = conn.execute("SELECT state FROM cases WHERE id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound(case_id)
    if State(row["state"]) not in DECIDABLE:
        raise Conflict(
            f"case {case_id} is {row['state']}; only validated or under_review cases can be decided"
        )
    out = Outcome()
    if decision == "action":
        out.publications = action(
            conn, case_id, now, account, reason, automated=False, cfg=cfg, edges=edges
        )
    else:
        conn.execute(
            "UPDATE cases SET decided_at = ?, decision = 'reject', decision_reason = ?,"
            " decided_by = ?, automated = 0 WHERE id = ?",
            (now, reason, account.id, case_id),
        )
        _decided(conn, case_id, now, actor_of(account), "reject", False)
        transition(
            conn,
            case_id,
            S.REJECTED,
            now,
            actor_of(account),
            {"reason": reason, "automated": False},
        )
    out.result = {"case": case_id, "state": state_of(conn, case_id).value}
    return out
