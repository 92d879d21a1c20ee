"""The command line as an operator meets it: the real exporter process, its flags, exit codes, logs and listener."""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter.server.connections import HEADER_TIMEOUT
from tests.processes import (
    Process,
    eventually,
    exporter_command,
    monotonic,
    sample,
    scrape,
    start_exporter,
    start_simulator,
)
from tests.support import free_port

pytestmark = pytest.mark.e2e

SECRET = "alpha-SECRET-2b7e151628aed2a6"
SCENARIO = f"""
seed: 3
tenants:
  - tenant_id: alpha.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000001
    client_secret: {SECRET}
    currencies:
      - {{code: USD, symbol: "$", balance: 12.5}}
  - tenant_id: broken.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-000000000002
    client_secret: {SECRET}
    currencies:
      - {{code: EUR, symbol: "€", balance: 1}}
    faults:
      - {{kind: status, status: 503}}
"""


def _config(url: str, tenants: tuple[str, ...] = ("alpha", "broken")) -> str:
    entries = "".join(
        f"""  - name: {name}
    tenant_id: {name}.onmicrosoft.com
    client_id: 10000000-0000-4000-8000-00000000000{i}
    client_secret: {SECRET}
"""
        for i, name in enumerate(tenants, 1)
    )
    return f"interval: 1h\ntimeout: 2s\napi_url: {url}\nlogin_url: {url}\ntenants:\n{entries}"


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*exporter_command(), *args], capture_output=True, text=True, check=False, timeout=timeout)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A valid config whose upstream is nowhere (for commands that never poll)."""
    path = tmp_path / "config.yml"
    path.write_text(_config(f"http://127.0.0.1:{free_port()}"))
    return path


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Process]:
    sim = start_simulator(tmp_path, SCENARIO)
    yield sim
    sim.stop()


def test_version_names_version_revision_and_python() -> None:
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"partnercenter-exporter \S+ \(revision \S+, Python 3\.\d+\.\d+\)\n", result.stdout)
    assert result.stderr == ""


def test_help_names_the_log_choices_and_defaults() -> None:
    text = " ".join(_run("--help").stdout.split())  # argparse wraps lines
    assert "--log.level LEVEL log events at this level and above: debug, info, warn (or warning), error" in text
    assert "(default: info)" in text
    assert "--log.format FORMAT log line format: logfmt or json (default: logfmt)" in text


@pytest.mark.parametrize("level", ["warn", "warning", "WARN", "debug", "error"])
def test_log_levels_go_exporters_know_are_accepted(config_file: Path, level: str) -> None:
    result = _run(f"--config.file={config_file}", "--config.check", f"--log.level={level}")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--demo", "--config.file={config}"], "--demo runs its own sample config; leave out --config.file"),
        (["--demo", "--config.check"], "--config.check checks a --config.file; the --demo config is built in"),
        (["--config.file={config}", "--config.check", "--once"], "--config.check only validates and --once polls"),
        ([], "--config.file is required (or --demo to try the exporter without credentials)"),
    ],
)
def test_flags_that_mean_nothing_together_exit_2_with_one_line(
    config_file: Path, flags: list[str], reason: str
) -> None:
    result = _run(*(flag.format(config=config_file) for flag in flags))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"partnercenter-exporter: error: {reason}"), line
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("address", "error"),
    [("9089", "'9089' is not [HOST]:PORT"), ("::1:9089", "put IPv6 addresses in brackets: [::1]:9089")],
)
def test_a_bad_listen_address_exits_2_naming_the_flag(config_file: Path, address: str, error: str) -> None:
    result = _run(f"--config.file={config_file}", f"--web.listen-address={address}")
    assert result.returncode == 2
    assert result.stderr.endswith(f"partnercenter-exporter: error: argument --web.listen-address: {error}\n")


def test_once_ignores_the_web_flags(tmp_path: Path, upstream: Process) -> None:
    config = tmp_path / "config.yml"
    config.write_text(_config(upstream.url, ("alpha",)))
    result = _run(f"--config.file={config}", "--once", f"--web.config.file={tmp_path / 'absent.yml'}")
    assert result.returncode == 0, result.stderr
    assert 'partnercenter_balance{currency="USD",tenant="alpha"} 12.5' in result.stdout
    assert "web" not in result.stderr


def _invalid_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yml"
    path.write_text(_config("http://127.0.0.1:1", ("alpha",)).replace("client_id: ", "client_id: x", 1))
    return path


def test_an_invalid_config_is_said_once_in_the_words_of_check(tmp_path: Path) -> None:
    bad = _invalid_config(tmp_path)
    result = _run(f"--config.file={bad}", "--config.check")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"invalid config {bad}: tenants[0].client_id: "), line
    assert result.stdout == ""
    assert SECRET not in result.stderr


@pytest.mark.parametrize("mode", [[], ["--once"]])
def test_an_invalid_config_is_one_log_line_when_starting(tmp_path: Path, mode: list[str]) -> None:
    bad = _invalid_config(tmp_path)
    result = _run(f"--config.file={bad}", "--log.format=json", f"--web.listen-address=127.0.0.1:{free_port()}", *mode)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    event = json.loads(line)
    assert (event["level"], event["msg"], event["file"]) == ("error", "invalid config", str(bad))
    assert event["err"].startswith("tenants[0].client_id: ")
    assert "cannot start" not in result.stderr
    assert SECRET not in result.stderr


def test_an_unreadable_config_names_its_file_once(tmp_path: Path) -> None:
    absent = tmp_path / "absent.yml"
    result = _run(f"--config.file={absent}", "--config.check")
    assert result.returncode == 2
    assert result.stderr == f"invalid config: cannot read {absent}: No such file or directory\n"


@pytest.mark.parametrize(
    ("web_config", "error"),
    [
        ("basic_auth_user:\n  alice: x\n", "basic_auth_user: unknown key (did you mean 'basic_auth_users'?)"),
        ("basic_auth_users:\n  alice: hunter2-plain-password\n", "basic_auth_users.alice: not a bcrypt hash"),
    ],
)
def test_a_web_config_error_names_the_file_and_the_key(
    tmp_path: Path, config_file: Path, web_config: str, error: str
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(web_config)
    check = _run(f"--config.file={config_file}", f"--web.config.file={web}", "--config.check")
    assert check.returncode == 2
    [line] = check.stderr.splitlines()
    assert line.startswith(f"invalid web config {web}: {error}"), line
    serve = _run(
        f"--config.file={config_file}", f"--web.config.file={web}", f"--web.listen-address=127.0.0.1:{free_port()}"
    )
    assert serve.returncode == 2
    [logged] = serve.stderr.splitlines()
    assert f'msg="invalid web config" file={web} err="{error}' in logged
    assert "hunter2" not in check.stderr + serve.stderr


def test_config_check_checks_the_web_config_too(tmp_path: Path, config_file: Path) -> None:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    result = _run(f"--config.file={config_file}", f"--web.config.file={web}", "--config.check")
    assert result.returncode == 0, result.stderr
    assert f'web_config="{web}" tls=off basic_auth_users=1' in result.stdout
    assert hashed not in result.stdout


def test_cannot_listen_exits_1_with_one_log_line(config_file: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(f"--config.file={config_file}", f"--web.listen-address=127.0.0.1:{port}")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f'msg="cannot listen" address=127.0.0.1:{port} err="Address already in use"' in line


def _events(process: Process) -> list[dict[str, object]]:
    """Every line the process wrote, each of which must be a JSON object."""
    return [json.loads(line) for line in process.log().splitlines()]


def test_demo_speaks_through_the_chosen_log_format(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as out:
        demo = subprocess.Popen(
            [*exporter_command(), "--demo", "--log.format=json", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    process = Process(demo, f"http://127.0.0.1:{port}", log_path)
    try:
        eventually(lambda: any(e["msg"] == "demo running; Ctrl-C stops it" for e in _events(process)), what="banner")
        [banner] = [e for e in _events(process) if e["msg"] == "demo running; Ctrl-C stops it"]
        assert banner["metrics"] == f"http://127.0.0.1:{port}/metrics"
        assert process.stop(signal.SIGINT) == 0
        assert all(isinstance(e, dict) for e in _events(process))
    finally:
        process.stop(signal.SIGKILL)


def test_json_logs_keep_numbers_and_leave_library_chatter_out(tmp_path: Path, upstream: Process) -> None:
    config = tmp_path / "config.yml"
    config.write_text(_config(upstream.url))
    exporter = start_exporter(tmp_path, config, "--log.format=json", "--log.level=debug")
    try:
        eventually(lambda: httpx.get(exporter.url + "/readyz").status_code == 200, what="every tenant polled")
        assert httpx.get(exporter.url + "/nope").status_code == 404
        eventually(lambda: any(e.get("path") == "/nope" for e in _events(exporter)), what="the access line")
        events = _events(exporter)
        failed = next(e for e in events if e["msg"] == "request failed")
        assert (failed["tenant"], failed["status"], failed["endpoint"]) == ("broken", 503, "summary")
        assert isinstance(failed["attempt"], int)
        access = next(e for e in events if e.get("path") == "/nope")
        assert (access["msg"], access["method"], access["status"]) == ("http request", "GET", 404)
        for event in events:
            assert str(event["logger"]).startswith("exporter") or event["level"] in ("warning", "error"), event
        assert not any("selector" in str(e["msg"]).lower() for e in events)
    finally:
        exporter.stop()


def _half_request_then_reset(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nAccept: te")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST, not FIN
    sock.close()


def _open_fds(exporter: Process) -> float:
    return sample(scrape(exporter.url), "process_open_fds") or 0


def _flood_with_resets(exporter: Process, count: int) -> None:
    """`count` connections that send half a request and reset; returns once the exporter has closed them all."""
    before = _open_fds(exporter)
    port = int(exporter.url.rsplit(":", 1)[1])
    for _ in range(count):
        _half_request_then_reset(port)
    # A connection's socket is closed after its thread has logged whatever it logs.
    eventually(lambda: _open_fds(exporter) <= before, what="every reset connection closed")


@pytest.mark.parametrize("level", ["error", "debug"])
def test_clients_that_reset_cost_no_traceback_and_at_most_a_debug_line(
    tmp_path: Path, upstream: Process, level: str
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(_config(upstream.url, ("alpha",)))
    exporter = start_exporter(tmp_path, config, "--log.format=json", f"--log.level={level}")
    try:
        eventually(lambda: httpx.get(exporter.url + "/readyz").status_code == 200, what="the tenant polled")
        _flood_with_resets(exporter, 100)
        if level == "error":
            assert exporter.log() == ""
        else:
            events = _events(exporter)  # every line is JSON: no traceback
            assert sum(e["msg"] == "connection dropped" for e in events) == 100
            server = [e for e in events if str(e["logger"]).startswith("exporter.server")]
            assert {str(e["msg"]) for e in server} == {"connection dropped", "http request"}
    finally:
        exporter.stop()


def _slow_clients(exporter: Process, count: int) -> list[socket.socket]:
    port = int(exporter.url.rsplit(":", 1)[1])
    clients = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + 10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n")  # and never the blank line
        clients.append(sock)
    return clients


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _still_open(sock: socket.socket) -> bool:
    timeout = sock.gettimeout()
    sock.settimeout(0)  # look, do not wait
    try:
        sock.recv(1)
    except BlockingIOError:
        return True  # nothing to read and not closed
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(timeout)
    return False


def test_scrapes_are_answered_while_200_slow_clients_hold_connections(tmp_path: Path, upstream: Process) -> None:
    config = tmp_path / "config.yml"
    config.write_text(_config(upstream.url, ("alpha",)))
    exporter = start_exporter(tmp_path, config)
    clients = _slow_clients(exporter, 200)
    held_since = monotonic()
    try:
        for _ in range(5):
            answer = httpx.get(exporter.url + "/metrics", timeout=5)
            assert answer.status_code == 200
            assert "partnercenter_exporter_build_info" in answer.text
        assert all(_still_open(sock) for sock in clients)
        # The header deadline frees their connections, where they would wait forever.
        assert all(_closed_by_server(sock) for sock in clients)
        assert monotonic() - held_since < HEADER_TIMEOUT + 5
    finally:
        for sock in clients:
            sock.close()
        exporter.stop()


def test_sigterm_exits_0_within_5s_with_slow_and_idle_clients_connected(tmp_path: Path, config_file: Path) -> None:
    exporter = start_exporter(tmp_path, config_file)
    clients = _slow_clients(exporter, 50)
    try:
        with httpx.Client() as keep_alive:
            assert keep_alive.get(exporter.url + "/metrics").status_code == 200  # its connection stays open
            started = monotonic()
            assert exporter.stop(signal.SIGTERM, timeout=10) == 0
            assert monotonic() - started < 5
    finally:
        for sock in clients:
            sock.close()
        exporter.stop(signal.SIGKILL)
