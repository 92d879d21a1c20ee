"""A scriptable fake of Partner Center + Entra ID behind httpx.MockTransport, and config builders."""

from __future__ import annotations

import json
import textwrap
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from exporter.config import Config, parse_config
from exporter.demo import self_signed

FIXTURES = Path(__file__).parent / "data" / "bodies"
SUMMARY_BODY = (FIXTURES / "invoice_summary.json").read_bytes()
SUMMARIES_BODY = (FIXTURES / "invoice_summaries.json").read_bytes()

Responder = Callable[[httpx.Request], httpx.Response]


def token_response(token: str = "tok", expires_in: object = 3600, refresh: str | None = None) -> httpx.Response:
    """A successful token answer."""
    body: dict[str, object] = {"token_type": "Bearer", "expires_in": expires_in, "access_token": token}
    if refresh is not None:
        body["refresh_token"] = refresh
    return httpx.Response(200, json=body)


@dataclass
class FakeUpstream:
    """Routes by tenant: token requests by the tenant in the URL, invoice requests by the bearer token."""

    tenants: dict[str, list[Responder]] = field(default_factory=dict)  # tenant_id -> scripted invoice answers
    token_scripts: dict[str, list[Responder]] = field(default_factory=dict)
    log: list[tuple[float, str, str, httpx.Request]] = field(default_factory=list)  # (time, tenant, endpoint, req)
    issued: int = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        """The MockTransport handler."""
        path = request.url.path
        if path.endswith("/oauth2/v2.0/token"):
            tenant = path.split("/")[1]
            self.log.append((time.monotonic(), tenant, "token", request))
            script = self.token_scripts.get(tenant)
            if script:
                return script.pop(0)(request) if len(script) > 1 else script[0](request)
            self.issued += 1
            form = urllib.parse.parse_qs(request.content.decode())
            refresh = f"refresh-{self.issued}" if form.get("grant_type") == ["refresh_token"] else None
            return token_response(f"{tenant}|{self.issued}", refresh=refresh)
        tenant = request.headers.get("Authorization", "").removeprefix("Bearer ").split("|")[0]
        endpoint = path.rsplit("/", 1)[-1]
        self.log.append((time.monotonic(), tenant, endpoint, request))
        script = self.tenants.get(tenant)
        if script:
            return script.pop(0)(request) if len(script) > 1 else script[0](request)
        return httpx.Response(200, content=SUMMARY_BODY if endpoint == "summary" else SUMMARIES_BODY)

    def transport(self) -> httpx.MockTransport:
        """A transport for one pooled client."""
        return httpx.MockTransport(self.handler)

    def count(self, tenant: str, endpoint: str) -> int:
        """Requests seen for `tenant` at `endpoint`."""
        return sum(1 for _, t, e, _ in self.log if t == tenant and e == endpoint)


def respond(status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> Responder:
    """A fixed answer."""
    content = body.encode() if isinstance(body, str) else body
    return lambda request: httpx.Response(status, content=content, headers=headers)


def ok_summary(balance: float, currency: str = "USD") -> Responder:
    """A minimal valid summary with the given balance."""
    body = json.dumps({"balanceAmount": balance, "currencyCode": currency, "currencySymbol": "$"})
    return respond(200, body)


def make_config(tmp_path: Path, tenants: str, **globals_: object) -> Config:
    """A config for the fake upstream: `tenants` is the YAML list body, globals override defaults."""
    settings = {
        "interval": "1m",
        "timeout": "2s",
        "concurrency": 4,
        "max_staleness": "1h",
        "api_url": "http://pc.test",
        "login_url": "http://login.test",
    } | globals_
    head = "\n".join(f"{k}: {v}" for k, v in settings.items())
    text = f"{head}\ntenants:\n" + textwrap.indent(textwrap.dedent(tenants).strip("\n"), "  ")
    return parse_config(text, base_dir=tmp_path, environ={})


def tenant_yaml(name: str, endpoint: str = "summary", extra: str = "") -> str:
    """One app-only tenant entry."""
    lines = [
        f"- name: {name}",
        f"  tenant_id: {name}.onmicrosoft.com",
        "  client_id: 11111111-1111-4111-8111-111111111111",
        f"  client_secret: secret-of-{name}",
        f"  endpoint: {endpoint}",
    ]
    lines += [f"  {x}" for x in textwrap.dedent(extra).strip("\n").splitlines() if x]
    return "\n".join(lines) + "\n"


def certificate_pem(
    days: float = 365, *, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None
) -> tuple[bytes, bytes, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    """(private key PEM, certificate PEM, key) of a self-signed app certificate valid for `days` from now."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pem, certificate = self_signed(key, days)
    return key_pem, certificate, key
