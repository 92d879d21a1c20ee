"""A control for scrape latency: a Python HTTP server in its own process that serves one fixed /metrics body.

    python bench/control.py --port=9999 --body=metrics.gz --encoding=gzip

It is the exporter's HTTP stack with nothing else in the process: the same `ThreadingHTTPServer`, keep-alive
HTTP/1.1 and TCP_NODELAY, and the whole answer (headers and body, built once) in one send. `bench/busy.py`
scrapes it in the same windows as the exporter, so what the machine does to any Python server while the
exporter polls (the other core busy, the hypervisor taking CPU time away) shows on it too, and what is left over
on the exporter is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> int:
    """Serve the body until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--body", type=Path, required=True, help="file holding the body, sent as it is")
    p.add_argument("--encoding", default="gzip", help="Content-Encoding of the body ('identity' for none)")
    args = p.parse_args()
    body = args.body.read_bytes()
    head = [
        "HTTP/1.1 200 OK",
        "Content-Type: text/plain; version=0.0.4; charset=utf-8",
        f"Content-Length: {len(body)}",
    ]
    if args.encoding != "identity":
        head.append(f"Content-Encoding: {args.encoding}")
    answer = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # the harness stops it with SIGTERM
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
