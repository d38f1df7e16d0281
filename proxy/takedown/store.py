"""SQLite storage: the schema and one connection owned by one thread.

Every read and write goes through `Store.run`, which executes a function inside a transaction on
the store's single database thread, so the event loop never blocks on disk and there is exactly
one writer in this process (see `Store` for group commit). WAL with `synchronous=FULL` means a transaction is on disk when
COMMIT returns; the HTTP answer is sent only after that, so an acknowledged notice survives a
crash. Other processes (the CLI's add-account, verify-log) may use the same file concurrently;
`BEGIN IMMEDIATE` and the busy timeout serialise them.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from proxy.takedown.kyc_schema import SCHEMA as KYC_SCHEMA

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
  key_hash TEXT NOT NULL, created_at REAL NOT NULL, disabled_at REAL,
  customer_id INTEGER REFERENCES customers(id));
CREATE TABLE IF NOT EXISTS customers (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, verification TEXT NOT NULL,
  verified_at REAL, verification_method TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sites (
  host TEXT PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
  created_at REAL NOT NULL, warned_at REAL, suspended_at REAL);
CREATE TABLE IF NOT EXISTS cases (
  id INTEGER PRIMARY KEY, state TEXT NOT NULL, legal_basis TEXT,
  received_at REAL NOT NULL, validated_at REAL, decided_at REAL, decision TEXT,
  decision_reason TEXT, decided_by INTEGER, automated INTEGER NOT NULL DEFAULT 0,
  published_at REAL, enforced_at REAL, trusted INTEGER NOT NULL DEFAULT 0,
  overdue_reported INTEGER NOT NULL DEFAULT 0,
  counter_notice_at REAL, restore_not_before TEXT, restore_not_after TEXT, restore_at REAL,
  restore_state TEXT, restored_at REAL, lawsuit_at REAL);
CREATE INDEX IF NOT EXISTS cases_state ON cases(state);
CREATE TABLE IF NOT EXISTS notices (
  id INTEGER PRIMARY KEY, case_id INTEGER REFERENCES cases(id), account_id INTEGER NOT NULL,
  received_at REAL NOT NULL, remote TEXT, raw BLOB NOT NULL, raw_sha256 TEXT NOT NULL,
  complete INTEGER NOT NULL, missing TEXT NOT NULL, legal_basis TEXT, parsed TEXT);
CREATE INDEX IF NOT EXISTS notices_case ON notices(case_id);
CREATE TABLE IF NOT EXISTS targets (
  id INTEGER PRIMARY KEY, notice_id INTEGER NOT NULL REFERENCES notices(id),
  case_id INTEGER REFERENCES cases(id), kind TEXT, value TEXT, raw TEXT NOT NULL,
  host TEXT, accepted INTEGER NOT NULL, reason TEXT);
CREATE INDEX IF NOT EXISTS targets_value ON targets(kind, value);
CREATE INDEX IF NOT EXISTS targets_case ON targets(case_id);
CREATE TABLE IF NOT EXISTS counter_notices (
  id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL REFERENCES cases(id),
  account_id INTEGER NOT NULL, received_at REAL NOT NULL, raw BLOB NOT NULL,
  raw_sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS strikes (
  id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL REFERENCES cases(id), host TEXT NOT NULL,
  customer_id INTEGER NOT NULL, at REAL NOT NULL, tolled_at REAL);
CREATE INDEX IF NOT EXISTS strikes_host ON strikes(host, at);
CREATE TABLE IF NOT EXISTS publications (
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, case_id INTEGER, host TEXT,
  entries TEXT NOT NULL, created_at REAL NOT NULL, published_at REAL, file_sequence INTEGER,
  done_at REAL, audit_head TEXT);
CREATE TABLE IF NOT EXISTS deliveries (
  publication_id INTEGER NOT NULL REFERENCES publications(id), edge TEXT NOT NULL,
  version INTEGER, enforced_at REAL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
  last_attempt_at REAL, overdue_reported INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (publication_id, edge));
CREATE TABLE IF NOT EXISTS contacts (
  party TEXT NOT NULL, party_id INTEGER NOT NULL, email TEXT, webhook_url TEXT,
  webhook_secret TEXT, PRIMARY KEY (party, party_id));
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY, case_id INTEGER REFERENCES cases(id), kind TEXT NOT NULL,
  party TEXT NOT NULL, channel TEXT NOT NULL, recipient TEXT NOT NULL, secret TEXT,
  subject TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, last_attempt_at REAL, last_error TEXT,
  delivered_at REAL, abandoned_at REAL);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(delivered_at, abandoned_at);
CREATE TABLE IF NOT EXISTS complaints (
  id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL REFERENCES cases(id),
  account_id INTEGER NOT NULL, party TEXT NOT NULL, received_at REAL NOT NULL,
  statement TEXT NOT NULL, decided_at REAL, outcome TEXT, decision_statement TEXT);
CREATE INDEX IF NOT EXISTS complaints_case ON complaints(case_id);
CREATE TABLE IF NOT EXISTS rejected_submissions (
  id INTEGER PRIMARY KEY, received_at REAL NOT NULL, account_id INTEGER, remote TEXT,
  route TEXT NOT NULL, case_id INTEGER, raw BLOB NOT NULL, raw_sha256 TEXT NOT NULL,
  errors TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_log (
  seq INTEGER PRIMARY KEY, at REAL NOT NULL, event TEXT NOT NULL, case_id INTEGER,
  actor TEXT NOT NULL, data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_case ON audit_log(case_id, seq);
CREATE TABLE IF NOT EXISTS audit_head (
  id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"""


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, fully synchronous."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(SCHEMA)
    conn.executescript(KYC_SCHEMA)  # customer verification (kyc_schema.py)
    _migrate(conn)
    conn.executescript(INDEXES)
    return conn


# Issue 19: the queries that run once per publication or per restore found their rows by
# scanning every publication or delivery ever made, so the service slowed as its history grew.
# Partial indexes hold only the rows still waiting, so they stay as small as the backlog.
INDEXES = """
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(edge, publication_id)
  WHERE enforced_at IS NULL;
CREATE INDEX IF NOT EXISTS publications_unpublished ON publications(id)
  WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS publications_case ON publications(case_id, kind);
"""


def _migrate(conn: sqlite3.Connection) -> None:
    """Columns added after a database may have been created (CREATE IF NOT EXISTS keeps the old
    table as it was)."""
    cols = {r["name"] for r in conn.execute("PRAGMA table_info(accounts)")}
    if "customer_id" not in cols:
        conn.execute("ALTER TABLE accounts ADD COLUMN customer_id INTEGER REFERENCES customers(id)")
    cols = {r["name"] for r in conn.execute("PRAGMA table_info(publications)")}
    if "audit_head" not in cols:  # the signed chain head shipped with the publication
        conn.execute("ALTER TABLE publications ADD COLUMN audit_head TEXT")
    cols = {r["name"] for r in conn.execute("PRAGMA table_info(cases)")}
    # Undo (redress.py): when and why the restriction was ended (reversal or withdrawal), and
    # when the last edge acknowledged its removal.
    for col in ("ended_at REAL", "ended_by TEXT", "end_statement TEXT", "lifted_at REAL"):
        if col.split()[0] not in cols:
            conn.execute(f"ALTER TABLE cases ADD COLUMN {col}")


def _head(conn: sqlite3.Connection) -> tuple[int, str] | None:
    row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


Job = tuple[Callable[..., Any], tuple[object, ...], "Future[Any]"]
MAX_BATCH = 64


class Store:
    """One SQLite connection, used only by its own writer thread, with group commit.

    Jobs queued while a COMMIT is being fsynced are run together in the next transaction, each
    inside its own SAVEPOINT (a failing job rolls back alone), and all of them are answered
    after that one COMMIT returns. Under load many notices share one fsync; alone, a job still
    commits at once. Nothing is answered before its transaction is durable.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # The audit chain's head as of the last COMMIT: what the anchor may sign (a head read
        # inside a batch could still be rolled back).
        self.committed_head: tuple[int, str] | None = None
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), daemon=True, name="takedown-db"
        )
        self._thread.start()
        ready.result()

    def _submit(self, fn: Callable[..., T], args: tuple[object, ...]) -> Future[T]:
        fut: Future[T] = Future()
        self._jobs.put((fn, args, fut))
        return fut

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(conn, *args)` in a transaction on the database thread; durable on return."""
        return await asyncio.wrap_future(self._submit(fn, args))

    def run_sync(self, fn: Callable[..., T], *args: object) -> T:
        return self._submit(fn, args).result()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _serve(self, ready: Future[None]) -> None:
        try:
            conn = connect(self.path)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        self.committed_head = _head(conn)
        ready.set_result(None)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                batch = [job]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        nxt = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self._run_batch(conn, batch)
                self.committed_head = _head(conn)
                if stop:
                    return
        finally:
            conn.close()

    @staticmethod
    def _run_batch(conn: sqlite3.Connection, batch: list[Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, fut in batch:
                if not fut.set_running_or_notify_cancel():  # its caller went away
                    outcomes.append((False, None))
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((True, fn(conn, *args)))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, exc))
            conn.execute("COMMIT")
        except BaseException as exc:  # the transaction itself failed: nothing is durable
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(batch)
        for (_, _, fut), (ok, value) in zip(batch, outcomes, strict=True):
            if fut.cancelled():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
