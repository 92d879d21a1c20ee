"""`--demo`: the built-in simulator in-process, and a config for its sample tenants. No credentials, no files."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from exporter.config import Config, parse_config
from exporter.simulator import Simulator, default_scenario

log = logging.getLogger(__name__)

# The default scenario's sample tenants; their credentials are public demo values, not secrets.
_DEMO_CONFIG = """
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
  - name: contoso
    tenant_id: contoso.onmicrosoft.com
    client_id: 11111111-1111-4111-8111-111111111111
    client_secret: demo-contoso-secret
  - name: fabrikam
    tenant_id: fabrikam.onmicrosoft.com
    client_id: 22222222-2222-4222-8222-222222222222
    client_secret: demo-fabrikam-secret
    refresh_token_file: fabrikam.token
    endpoint: summaries
  - name: northwind
    tenant_id: northwind.onmicrosoft.com
    client_id: 33333333-3333-4333-8333-333333333333
    client_secret: demo-northwind-secret
  - name: adatum
    tenant_id: adatum.onmicrosoft.com
    client_id: 44444444-4444-4444-8444-444444444444
    client_secret: demo-adatum-secret
"""


@contextlib.contextmanager
def demo_config() -> Iterator[Config]:
    """Start the simulator on a free 127.0.0.1 port and yield a config pointing at it."""
    scenario = default_scenario()
    simulator = Simulator(scenario, host="127.0.0.1", port=0)
    simulator.start()
    try:
        with tempfile.TemporaryDirectory(prefix="partnercenter-demo-") as tmp:
            base = Path(tmp)
            refresh = next(t.refresh_token for t in scenario.tenants if t.refresh_token)
            (base / "fabrikam.token").write_text(refresh + "\n", encoding="utf-8")
            (base / "fabrikam.token").chmod(0o600)
            # The demo polls every 15s on purpose; the config loader's "interval below 1m" advice is for real use.
            config_log = logging.getLogger("exporter.config")
            level = config_log.level
            config_log.setLevel(logging.ERROR)
            try:
                config = parse_config(_DEMO_CONFIG.format(url=simulator.url), base_dir=base, environ={})
            finally:
                config_log.setLevel(level)
            log.info("demo simulator running", extra={"url": simulator.url})
            yield config
    finally:
        simulator.stop()
