"""What HTTP/2 through the `h2` library would add to a cache hit (issue 16: "if the hot path can
stay within 1.5× of HTTP/1.1's CPU per hit with the h2 library … add ALPN h2; measure and
report either way"). A measurement only: nothing here is wired into the server.

    .venv/bin/python -m benchmarks.h2_cost [--requests 10000] [--rounds 5]

Three figures, CPU time (process_time) per 1 KiB hit, best of `--rounds`:

* **h1**: `benchmarks.hitpath`, this project's whole HTTP/1.1 hit path in Python (llhttp parse,
  admit, lookup, one write of stored head + body) into a fake transport.
* **h2 framing**: a server-side `h2.connection.H2Connection` fed the bytes of one client
  HEADERS frame (a GET, HPACK-encoded by a client `H2Connection`, as a browser's second and later
  requests on a connection are: mostly indexed), answering with `send_headers` (the hit's
  response fields, HPACK-encoded per response, as h2 must: a stored head cannot be reused as
  bytes because the encoder's dynamic table is per connection) and `send_data` of the 1 KiB
  body with END_STREAM, then `data_to_send()`. Only the protocol work, no cache lookup. Measured
  with h2's default config and with its inbound/outbound header validation and normalisation
  off (the least h2 can cost).
* **h2 hit (estimate)** = h1 + h2 framing: an upper bound for a hit served over h2 with the
  pipeline unchanged (it still counts llhttp's parse, which h2 would replace, ~1 µs).

The ratio h2 hit / h1 is the figure the issue's 1.5× goal is about. Kernel, uvloop and TLS
costs are left out of both (they are about the same per hit and would shrink the ratio).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.settings

from benchmarks import hitpath

BODY = b"x" * 1024
REQUEST_HEADERS = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"127.0.0.1:8443"),
    (b":path", b"/bytes/1024"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate, br"),
]


def response_headers(n: int) -> list[tuple[bytes, bytes]]:
    """The fields of an edge hit (as the HTTP/1.1 path writes them); Age, Date and the request
    id change between hits, so they are not all indexed."""
    return [
        (b":status", b"200"),
        (b"content-type", b"application/octet-stream"),
        (b"cache-control", b"public, max-age=3600"),
        (b"etag", b'"98914a9a5c71694a"'),
        (b"date", b"Sun, 06 Dec 2026 17:55:%02d GMT" % (n // 1000 % 60)),
        (b"via", b"1.1 edgeproxy"),
        (b"content-length", b"1024"),
        (b"age", b"%d" % (n // 1000)),
        (b"cache-status", b"edgeproxy; hit; ttl=%d" % (3600 - n // 1000)),
        (b"x-request-id", b"gb73xzl3-%x" % n),
    ]


def client_frames(requests: int) -> tuple[bytes, list[bytes]]:
    """The client's connection preface (with a window large enough for every response) and the
    bytes of each request's HEADERS frame, in stream order. A server answers each one here too,
    so that the client sees its streams end (h2 counts open streams by walking them all: a
    client holding thousands open would make this quadratic)."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    client.increment_flow_control_window(2**31 - 1 - 65535)
    preface = client.data_to_send()
    server = _server(configs()["default"], preface)
    frames = []
    for i in range(requests):
        client.send_headers(1 + 2 * i, REQUEST_HEADERS, end_stream=True)
        frame = client.data_to_send()
        frames.append(frame)
        client.receive_data(_answer(server, frame, response_headers(i)))
        client.data_to_send()
    return preface, frames


def _server(config: h2.config.H2Configuration, preface: bytes) -> h2.connection.H2Connection:
    server = h2.connection.H2Connection(config)
    server.initiate_connection()
    server.receive_data(preface)
    server.data_to_send()
    return server


def _answer(
    server: h2.connection.H2Connection, frame: bytes, fields: list[tuple[bytes, bytes]]
) -> bytes:
    """One hit over h2: the request's frame in, the response's frames out."""
    for event in server.receive_data(frame):
        if isinstance(event, h2.events.RequestReceived):
            server.send_headers(event.stream_id, fields)
            server.send_data(event.stream_id, BODY, end_stream=True)
    return server.data_to_send()


def h2_per_hit(requests: int, rounds: int, config: h2.config.H2Configuration) -> float:
    """Best CPU seconds per hit of the server side of h2 (see the module docstring)."""
    preface, frames = client_frames(requests)
    headers = [response_headers(i) for i in range(requests)]
    best = float("inf")
    for _ in range(rounds):
        server = _server(config, preface)
        answer = _answer
        started = time.process_time()
        sent = sum(len(answer(server, f, h)) for f, h in zip(frames, headers, strict=True))
        best = min(best, time.process_time() - started)
        assert sent > requests * len(BODY), sent
    return best / requests


def configs() -> dict[str, h2.config.H2Configuration]:
    lean: Callable[[], h2.config.H2Configuration] = lambda: h2.config.H2Configuration(  # noqa: E731
        client_side=False,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )
    return {
        "default": h2.config.H2Configuration(client_side=False, header_encoding=None),
        "no validation": lean(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    h1 = hitpath.per_hit_s(args.requests, args.rounds)
    print(f"h1 hit path (benchmarks.hitpath):        {h1 * 1e6:6.2f} µs CPU per hit")
    for name, config in configs().items():
        framing = h2_per_hit(args.requests, args.rounds, config)
        ratio = (h1 + framing) / h1
        print(
            f"h2 framing, h2 {h2.__version__} ({name + '):':<15} {framing * 1e6:6.2f} µs; "
            f"h2 hit ≈ {(h1 + framing) * 1e6:6.2f} µs = {ratio:.2f}× h1"
        )
    print(f"(best of {args.rounds} × {args.requests}; the goal: an h2 hit within 1.5× of h1)")


if __name__ == "__main__":
    main()
