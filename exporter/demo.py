"""`--demo`: the built-in simulator in-process, and a config for its sample tenants. No credentials, no files.

The sample credentials are public demo values, not secrets; tailspin's certificate is made at start, so the demo
shows every kind of credential.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from exporter.config import Config, parse_config
from exporter.simulator import Currency, Scenario, Simulator, TenantScenario, default_scenario

log = logging.getLogger(__name__)

_DEMO_SETTINGS = """
interval: 15s
timeout: 10s
concurrency: 4
max_staleness: 10m
payment_terms: 30d
api_url: {url}
login_url: {url}
thresholds:
  USD: {{warning: 40000, critical: 100000}}
  EUR: {{warning: 50000, critical: 100000}}
  GBP: {{warning: 50000, critical: 100000}}
tenants:
"""


def self_signed(key: CertificateIssuerPrivateKeyTypes, days: float) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) of a self-signed certificate for `key`, valid from now for `days`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partnercenter-exporter demo")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def _certificate_tenant(base: Path) -> TenantScenario:
    """tailspin: app-only with a certificate credential; the PEM (key and certificate) goes to `base`."""
    key_pem, certificate_pem = self_signed(rsa.generate_private_key(public_exponent=65537, key_size=2048), 90)
    pem = base / "tailspin.pem"
    pem.write_bytes(key_pem + certificate_pem)
    pem.chmod(0o600)
    return TenantScenario(
        tenant_id="tailspin.onmicrosoft.com",
        client_id="66666666-6666-4666-8666-666666666666",
        certificates=(certificate_pem.decode(),),
        currencies=(Currency(code="USD", symbol="$", balance=23750.0, invoice_types=(("Recurring", 23750.0),)),),
    )


def _demo_yaml(scenario: Scenario, url: str, base: Path) -> str:
    """A config for every tenant of the scenario; App+User ones (with a refresh token) use `summaries`."""
    lines = [_DEMO_SETTINGS.format(url=url)]
    for tenant in scenario.tenants:
        name = tenant.tenant_id.split(".", 1)[0]
        lines += [f"  - name: {name}", f"    tenant_id: {tenant.tenant_id}", f"    client_id: {tenant.client_id}"]
        if tenant.client_secret:
            lines.append(f"    client_secret: {tenant.client_secret}")
        elif tenant.certificates:
            lines.append(f"    client_certificate_file: {name}.pem")
        if tenant.refresh_token:
            token_file = base / f"{name}.token"
            token_file.write_text(tenant.refresh_token + "\n", encoding="utf-8")
            token_file.chmod(0o600)
            lines += [f"    refresh_token_file: {token_file.name}", "    endpoint: summaries"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def demo_config() -> Iterator[Config]:
    """Start the simulator on a free 127.0.0.1 port and yield a config pointing at it."""
    with tempfile.TemporaryDirectory(prefix="partnercenter-demo-") as tmp:
        base = Path(tmp)
        scenario = default_scenario()
        scenario = dataclasses.replace(scenario, tenants=(*scenario.tenants, _certificate_tenant(base)))
        with Simulator(scenario, host="127.0.0.1", port=0) as simulator:
            # The demo polls every 15s on purpose; the config loader's "interval below 1m" advice is for real use.
            config_log = logging.getLogger("exporter.config")
            level = config_log.level
            config_log.setLevel(logging.ERROR)
            try:
                config = parse_config(_demo_yaml(scenario, simulator.url, base), base_dir=base, environ={})
            finally:
                config_log.setLevel(level)
            log.info("demo simulator running", extra={"url": simulator.url})
            yield config
