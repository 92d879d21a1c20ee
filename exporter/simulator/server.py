"""The simulator's HTTP server and `Simulator`, the handle tests, `--demo` and the command line start it with."""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer

from exporter.simulator.handler import Handler
from exporter.simulator.scenario import Fault, Scenario
from exporter.simulator.state import TenantState, World

log = logging.getLogger(__name__)


class SimulatorServer(ThreadingHTTPServer):
    """Thread per connection, large backlog, and a registry of open connections for a prompt stop."""

    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 resets concurrent connects under load.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, world: World) -> None:
        """Bind and listen."""
        self.address_family = family
        self.world = world
        # Plain HTTP: the URLs the simulator writes (discovery) and checks (assertion `aud`) start with it.
        self.scheme = "http"
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host, which can stall start-up."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, conn: socket.socket, open_: bool) -> None:
        """Remember or forget an open connection."""
        with self._connections_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut every open connection so that handler threads blocked on idle keep-alive reads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            # A connection its handler already closed raises OSError: nothing left to do.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        """Log a handler crash instead of printing to stderr."""
        log.exception("simulator request failed", extra={"client": str(client_address)})


def _family(host: str) -> socket.AddressFamily:
    """IPv6 for hosts written like IPv6 addresses."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Simulator:
    """The Partner Center API and Entra ID token endpoint, served from a scenario in a background thread."""

    def __init__(
        self,
        scenario: Scenario,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare; `port` 0 picks a free port at start. `clock` (Unix seconds) drives drift and token expiry."""
        self.scenario = scenario
        self._host = host
        self._port = port
        self._world = World(scenario, clock)
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen and serve in a background thread; returns once listening."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = SimulatorServer((self._host, self._port), _family(self._host), self._world)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="simulator", daemon=True
        )
        self._thread.start()
        log.info("simulator listening", extra={"url": self.url, "tenants": len(self.scenario.tenants)})

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of both the API and the login endpoint, like `http://127.0.0.1:8089`."""
        host = self._host
        if host in ("", "0.0.0.0"):  # noqa: S104 - a wildcard bind is reached through loopback
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests received per tenant and endpoint: `{"tenant_id": {"token": n, "summary": n, "summaries": n}}`."""
        return self._world.stats()

    def _tenant(self, tenant_id: str) -> TenantState:
        """A scenario tenant by id, or KeyError."""
        tenant = self._world.tenant(tenant_id)
        if tenant is None:
            raise KeyError(tenant_id)
        return tenant

    def set_faults(self, tenant_id: str, faults: Iterable[Fault]) -> None:
        """Replace a tenant's faults (KeyError for an unknown tenant)."""
        self._tenant(tenant_id).set_faults(faults)

    def revoke(self, tenant_id: str) -> None:
        """Invalidate every token issued for a tenant (KeyError for an unknown tenant)."""
        self._tenant(tenant_id).revoke()

    def stop(self) -> None:
        """Stop serving and close open connections, without waiting for hanging faults."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join(timeout=5)
        self._server = self._thread = None
        log.info("simulator stopped")

    def __enter__(self) -> Simulator:
        """Start."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()
