"""The verification commands of `edgeproxy takedown` (issue 15): the CLI does what the API does,
including a real HTTP domain-control check against a server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from proxy.takedown.cli import main

SERVED: dict[str, bytes] = {}


class Challenge(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = SERVED.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def challenge_server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Challenge)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def run(capsys: pytest.CaptureFixture[str], *argv: str, rc: int = 0) -> Any:
    assert main(list(argv)) == rc, capsys.readouterr()
    out = capsys.readouterr()
    if rc:
        return out.err
    text = out.out
    try:
        return json.loads(text)
    except ValueError:
        return text


def test_verify_a_customer_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], challenge_server: int
) -> None:
    db = str(tmp_path / "t.db")
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[verification]\ndcv_http_via = "127.0.0.1:{challenge_server}"\n')
    key = run(capsys, "add-account", "--db", db, "--name", "rev", "--role", "operator")
    reviewer = key.strip().splitlines()[-1].split("_")[1]
    run(capsys, "add-site", "--db", db, "--host", "a.example", "--customer", "Acme")
    err = run(
        capsys,
        "identity",
        "--db",
        db,
        "--customer",
        "Acme",
        "--legal-name",
        "Acme",
        "--address",
        "1 Road",
        "--country",
        "Germany",
        "--contact-email",
        "a@acme.example",
        rc=2,
    )
    assert "country" in err
    ident = run(
        capsys,
        "identity",
        "--db",
        db,
        "--customer",
        "Acme",
        "--legal-name",
        "Acme",
        "--address",
        "1 Road",
        "--country",
        "de",
        "--contact-email",
        "a@acme.example",
    )
    assert ident["country"] == "DE"
    doc = tmp_path / "extract.pdf"
    doc.write_bytes(b"%PDF register extract")
    ev = run(
        capsys,
        "evidence",
        "--db",
        db,
        "--customer",
        "Acme",
        "--method",
        "company-register",
        "--document-file",
        str(doc),
        "--reviewer",
        reviewer,
    )
    assert ev["method"] == "company-register"
    shown = run(capsys, "customers", "--db", db, "--show", "Acme")
    assert shown["level"] == "documents-checked"
    assert shown["evidence"][0]["document_sha256"] == hashlib.sha256(doc.read_bytes()).hexdigest()
    ch = run(
        capsys, "dcv", "--db", db, "--config", str(cfg), "--host", "a.example", "--start", "http-01"
    )
    out = run(
        capsys,
        "dcv",
        "--db",
        db,
        "--config",
        str(cfg),
        "--host",
        "a.example",
        "--check",
        str(ch["id"]),
    )
    assert out["state"] == "pending" and "404" in out["last_error"]
    SERVED[f"/.well-known/edgeproxy-challenge/{ch['token']}"] = ch["challenge"]["body"].encode()
    out = run(
        capsys,
        "dcv",
        "--db",
        db,
        "--config",
        str(cfg),
        "--host",
        "a.example",
        "--check",
        str(ch["id"]),
    )
    assert out["state"] == "valid"
    site = run(capsys, "sites", "--db", db, "--show", "a.example")
    assert (site["level"], site["live"]) == ("domain-validated", True)
    assert run(capsys, "sites", "--db", db)[0]["live"] is True
    order = {
        "kind": "court-order",
        "issuer": "LG Berlin",
        "reference": "15 O 1/26",
        "date": "2026-01-02",
        "document_sha256": "ab" * 32,
        "requester": "Rights Org",
        "site": "a.example",
    }
    d = run(capsys, "disclosure", "--db", db, "--record", json.dumps(order))
    out = run(capsys, "disclosure", "--db", db, "--disclose", str(d["case"]))
    assert out["identity"]["legal_name"] == "Acme" and out["state"] == "disclosed"
    rotated = run(capsys, "accounts", "--db", db, "--rotate-key", reviewer)
    assert rotated["key"].startswith(f"tdk_{reviewer}_")
    run(capsys, "accounts", "--db", db, "--disable", reviewer)
    (acct,) = run(capsys, "accounts", "--db", db)
    assert acct["disabled_at"] is not None
    assert "not an enabled operator" in run(
        capsys,
        "evidence",
        "--db",
        db,
        "--customer",
        "Acme",
        "--method",
        "passport",
        "--document-ref",
        "x",
        "--reviewer",
        reviewer,
        rc=2,
    )
