"""`--demo`: the built-in simulator in-process, and a config for its sample tenants. No credentials, no files.

The sample tenants' credentials are public demo values of the default scenario, not secrets.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from exporter.config import Config, parse_config
from exporter.simulator import Scenario, Simulator, default_scenario

log = logging.getLogger(__name__)

_DEMO_SETTINGS = """
interval: 15s
timeout: 10s
concurrency: 4
max_staleness: 10m
api_url: {url}
login_url: {url}
thresholds:
  USD: {{warning: 40000, critical: 100000}}
  EUR: {{warning: 50000, critical: 100000}}
  GBP: {{warning: 50000, critical: 100000}}
tenants:
"""


def _demo_yaml(scenario: Scenario, url: str, base: Path) -> str:
    """A config for every tenant of the scenario; App+User ones (with a refresh token) use `summaries`."""
    lines = [_DEMO_SETTINGS.format(url=url)]
    for tenant in scenario.tenants:
        name = tenant.tenant_id.split(".", 1)[0]
        lines += [
            f"  - name: {name}",
            f"    tenant_id: {tenant.tenant_id}",
            f"    client_id: {tenant.client_id}",
        ]
        if tenant.client_secret:
            lines.append(f"    client_secret: {tenant.client_secret}")
        if tenant.refresh_token:
            token_file = base / f"{name}.token"
            token_file.write_text(tenant.refresh_token + "\n", encoding="utf-8")
            token_file.chmod(0o600)
            lines += [f"    refresh_token_file: {token_file.name}", "    endpoint: summaries"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def demo_config() -> Iterator[Config]:
    """Start the simulator on a free 127.0.0.1 port and yield a config pointing at it."""
    scenario = default_scenario()
    simulator = Simulator(scenario, host="127.0.0.1", port=0)
    simulator.start()
    try:
        with tempfile.TemporaryDirectory(prefix="partnercenter-demo-") as tmp:
            base = Path(tmp)
            text = _demo_yaml(scenario, simulator.url, base)
            # The demo polls every 15s on purpose; the config loader's "interval below 1m" advice is for real use.
            config_log = logging.getLogger("exporter.config")
            level = config_log.level
            config_log.setLevel(logging.ERROR)
            try:
                config = parse_config(text, base_dir=base, environ={})
            finally:
                config_log.setLevel(level)
            log.info("demo simulator running", extra={"url": simulator.url})
            yield config
    finally:
        simulator.stop()
