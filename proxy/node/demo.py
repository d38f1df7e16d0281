"""`edgeproxy demo` (what `make run` starts): a bundled demo origin on 127.0.0.1 and an edge
node on its embedded defaults in front of it, so `curl` shows a MISS and then a HIT.
`--tls` also serves HTTPS, with a certificate for localhost and 127.0.0.1 signed by a local CA
made for the run (its `ca.pem` is what curl is told to trust)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time

import msgspec
from aiohttp import web

from proxy.config import Config, Site, validate
from proxy.node.localca import LocalCA
from proxy.node.supervisor import AdminStarter

DEMO_TOKEN = "demo-admin-token"


async def _page(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index")
    body = f"demo origin page {name!r}, rendered at {time.strftime('%H:%M:%S')}\n".encode()
    return web.Response(
        body=body,
        content_type="text/plain",
        headers={
            "Cache-Control": "public, max-age=60, stale-while-revalidate=30",
            "ETag": '"' + hashlib.sha256(name.encode()).hexdigest()[:16] + '"',
        },
    )


async def _nostore(request: web.Request) -> web.Response:
    return web.Response(text="never stored\n", headers={"Cache-Control": "no-store"})


def demo_origin() -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.get("/", _page),
            web.get("/nostore", _nostore),
            web.get("/{name:.+}", _page),
        ]
    )
    return app


async def run_demo(
    listen: str,
    admin: str,
    origin_port: int,
    workers: int,
    *,
    start_admin: AdminStarter | None = None,
    listen_tls: str = "",
) -> int:
    runner = web.AppRunner(demo_origin(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", origin_port).start()
    # A fresh node each run, gone when it stops: its node tier reserves its disk (576 MiB),
    # and fifteen runs left behind held 8 GiB of /tmp.
    state_dir = tempfile.mkdtemp(prefix="edgeproxy-demo-")
    tls = Config().tls
    ca_file = ""
    if listen_tls:
        ca = LocalCA(os.path.join(state_dir, "tls"), name="edgeproxy demo CA")
        leaf = ca.issue(["localhost", "127.0.0.1", "::1"], stem="demo")
        tls = msgspec.structs.replace(tls, cert_file=leaf.cert_file, key_file=leaf.key_file)
        ca_file = ca.ca_file
    cfg = validate(
        msgspec.structs.replace(
            Config(),
            listen=listen,
            listen_tls=listen_tls,
            tls=tls,
            workers=workers,
            state_dir=state_dir,
            sites=[
                Site(
                    name="demo",
                    hosts=["*"],
                    origin=f"http://127.0.0.1:{origin_port}",
                    hsts_max_age_s=300 if listen_tls else 0,
                )
            ],
            admin=msgspec.structs.replace(Config().admin, listen=admin),
            # A node tier under that state dir: the workers share one cache.
            cache=msgspec.structs.replace(Config().cache, node_tier_bytes=256 << 20),
        )
    )
    token = os.environ.get("EDGEPROXY_ADMIN_TOKEN") or DEMO_TOKEN
    print(f"demo origin on http://127.0.0.1:{origin_port}")
    print(f"try:  curl -si http://{listen}/hello   (twice: Cache-Status shows fwd=miss, then hit)")
    if listen_tls:
        print(f"      curl -si --cacert {ca_file} https://{listen_tls}/hello   (over TLS)")
    print(
        f"      curl -s -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d "
        f'\'{{"entries":[{{"id":"demo-1","type":"prefix","value":"http://{listen}/hello",'
        f'"notice":"N-1","reason":"demo"}}]}}\' http://{admin}/blocklist/entries'
    )
    from proxy.node.supervisor import serve

    try:
        return await serve(cfg, admin_token=token, start_admin=start_admin)
    finally:
        await runner.cleanup()
        shutil.rmtree(state_dir, ignore_errors=True)
