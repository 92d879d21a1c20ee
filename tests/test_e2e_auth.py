"""Auth end to end: the exporter process against the simulator process, one tenant per kind of credential.

Certificates, federated tokens, clouds and scopes, MFA, dead refresh tokens: each as Entra ID and Partner Center
would answer it (the simulator checks what the real services check), and no credential in any output.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.fakes import certificate_pem
from tests.processes import (
    Process,
    eventually,
    exporter_command,
    sample,
    scrape,
    sim_stats,
    start_exporter,
    start_simulator,
)

pytestmark = pytest.mark.e2e

ISSUER = "https://oidc.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/"
SUBJECT = "system:serviceaccount:monitoring:partnercenter-exporter"
SECRET = "plain-SECRET-4f3e2d1c"
REFRESH = {"mfa": "mfa-REFRESH-8a7b6c5d", "nomfa": "nomfa-REFRESH-1a2b3c4d", "dead": "dead-REFRESH-9f8e7d6c"}


def _tenant(name: str, index: int, credential: str, extra: str = "") -> str:
    return (
        f"  - tenant_id: {name}.onmicrosoft.com\n    client_id: 30000000-0000-4000-8000-{index:012d}\n"
        f"{credential}{extra}    currencies: [{{code: USD, symbol: '$', balance: {100 + index}}}]\n"
    )


@dataclass
class Stack:
    sim: Process
    exporter: Process
    tmp: Path
    certificate: bytes  # the registered certificate's key+cert PEM, as the exporter reads it
    assertion: Path


def _federated_token(audience: str = "api://AzureADTokenExchange", lifetime: int = 3600) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": SUBJECT, "aud": audience, "iat": now, "nbf": now, "exp": now + lifetime}
    return jwt.encode(claims, "cluster-signing-key-not-checked-here", algorithm="HS256")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    key_pem, cert_pem, _ = certificate_pem(days=10)  # inside the 14-day warning
    other_key, other_cert, _ = certificate_pem()
    indent = "\n        "
    scenario = "seed: 11\ntoken_lifetime: 3600\ntenants:\n" + "".join(
        [
            _tenant("cert", 1, f"    certificates:\n      - |{indent}{indent.join(cert_pem.decode().splitlines())}\n"),
            _tenant(
                "unregistered",
                2,
                f"    certificates:\n      - |{indent}{indent.join(cert_pem.decode().splitlines())}\n",
            ),
            _tenant("federated", 3, f"    federated: {{issuer: '{ISSUER}', subject: '{SUBJECT}'}}\n"),
            _tenant("mfa", 4, f"    client_secret: {SECRET}\n    refresh_token: {REFRESH['mfa']}\n"),
            _tenant(
                "nomfa", 5, f"    client_secret: {SECRET}\n    refresh_token: {REFRESH['nomfa']}\n    mfa: false\n"
            ),
            _tenant("dead", 6, f"    client_secret: {SECRET}\n    refresh_token: {REFRESH['dead']}\n"),
        ]
    )
    sim = start_simulator(tmp_path, scenario)
    # Before the exporter's first poll: dead's refresh token is revoked (a password reset, an admin's revocation).
    httpx.post(f"{sim.url}/_sim/tenants/dead.onmicrosoft.com/revoke", timeout=5).raise_for_status()
    (tmp_path / "cert.pem").write_bytes(key_pem + cert_pem)
    (tmp_path / "other.pem").write_bytes(other_key + other_cert)  # a valid pair the simulator does not know
    assertion = tmp_path / "azure-identity-token"
    assertion.write_text(_federated_token())
    for name, token in REFRESH.items():
        (tmp_path / f"{name}.token").write_text(token + "\n")

    def tenant(name: str, index: int, lines: str) -> str:
        return (
            f"  - name: {name}\n    tenant_id: {name}.onmicrosoft.com\n"
            f"    client_id: 30000000-0000-4000-8000-{index:012d}\n{lines}"
        )

    app_user = "    client_secret: " + SECRET + "\n    refresh_token_file: {0}.token\n    endpoint: summaries\n"
    config = tmp_path / "config.yml"
    config.write_text(
        f"interval: 2s\ntimeout: 3s\nmax_staleness: 1h\napi_url: {sim.url}\nlogin_url: {sim.url}\ntenants:\n"
        + tenant("cert", 1, "    client_certificate_file: cert.pem\n")
        + tenant("unregistered", 2, "    client_certificate_file: other.pem\n")
        + tenant("federated", 3, "    client_assertion_file: azure-identity-token\n")
        + "".join(tenant(name, 4 + i, app_user.format(name)) for i, name in enumerate(REFRESH))
    )
    exporter = start_exporter(tmp_path, config, "--log.level=debug")
    try:
        yield Stack(sim, exporter, tmp_path, key_pem + cert_pem, assertion)
    finally:
        exporter.stop(signal.SIGKILL)
        sim.stop()


def _errors(samples: dict, tenant: str, endpoint: str, status: str) -> float:  # type: ignore[type-arg]
    value = sample(
        samples, "partnercenter_api_request_errors_total", tenant=tenant, endpoint=endpoint, status_code=status
    )
    return value or 0.0


def test_every_kind_of_credential_against_entra_rules(stack: Stack) -> None:
    tenants = ("cert", "unregistered", "federated", "mfa", "nomfa", "dead")
    eventually(
        lambda: all(sample(scrape(stack.exporter.url), "partnercenter_up", tenant=t) is not None for t in tenants),
        what="every tenant polled",
    )
    m = scrape(stack.exporter.url)
    up = {t: sample(m, "partnercenter_up", tenant=t) for t in tenants}
    assert up == {"cert": 1, "unregistered": 0, "federated": 1, "mfa": 1, "nomfa": 0, "dead": 0}

    # Certificate: signed assertion accepted; its notAfter exported; an unregistered one refused (AADSTS700027).
    expiry = sample(m, "partnercenter_credential_expiry_timestamp_seconds", tenant="cert")
    assert expiry is not None
    assert 9 * 86400 < expiry - time.time() < 11 * 86400
    assert _errors(m, "unregistered", "token", "401") >= 1
    assert "AADSTS700027" in stack.exporter.log()

    # MFA: the App+User token's amr claim, and the 900421 refusal without a new token per poll.
    assert sample(m, "partnercenter_token_mfa", tenant="mfa") == 1
    assert sample(m, "partnercenter_token_mfa", tenant="nomfa") == 0
    assert sample(m, "partnercenter_token_mfa", tenant="cert") is None  # app-only
    eventually(lambda: _errors(scrape(stack.exporter.url), "nomfa", "summaries", "401") >= 3, what="three refusals")
    assert sim_stats(stack.sim)["nomfa.onmicrosoft.com"]["token"] == 1
    landing = httpx.get(stack.exporter.url + "/", timeout=5).text
    assert "no MFA claim" in landing
    assert "consent again with MFA" in stack.exporter.log()

    # A revoked refresh token: 400 invalid_grant (AADSTS50173), counted on the token endpoint, trace id logged.
    assert _errors(m, "dead", "token", "400") >= 1
    log = stack.exporter.log()
    assert "code=AADSTS50173" in log
    assert "trace_id=" in log


def test_the_federated_token_file_is_read_again_at_every_token_request(stack: Stack) -> None:
    eventually(lambda: sample(scrape(stack.exporter.url), "partnercenter_up", tenant="federated") == 1, what="up")
    before = sim_stats(stack.sim)["federated.onmicrosoft.com"]["token"]
    # A token for another audience: the simulator refuses it as Entra would (no matching federated record).
    stack.assertion.write_text(_federated_token(audience="api://SomethingElse"))
    httpx.post(f"{stack.sim.url}/_sim/tenants/federated.onmicrosoft.com/revoke", timeout=5).raise_for_status()
    eventually(lambda: sample(scrape(stack.exporter.url), "partnercenter_up", tenant="federated") == 0, what="down")
    stack.assertion.write_text(_federated_token())  # the projected token rotated back to a good one
    eventually(lambda: sample(scrape(stack.exporter.url), "partnercenter_up", tenant="federated") == 1, what="up again")
    assert sim_stats(stack.sim)["federated.onmicrosoft.com"]["token"] > before + 1


def test_no_credential_anywhere(stack: Stack) -> None:
    eventually(lambda: sample(scrape(stack.exporter.url), "partnercenter_up", tenant="nomfa") == 0, what="polls")
    outputs = {
        "metrics": httpx.get(stack.exporter.url + "/metrics", timeout=5).text,
        "landing page": httpx.get(stack.exporter.url + "/", timeout=5).text,
        "config check": subprocess.run(
            [*exporter_command(), f"--config.file={stack.tmp / 'config.yml'}", "--config.check"],
            capture_output=True, text=True, check=False, timeout=60,
        ).stdout,
    }  # fmt: skip
    assert stack.exporter.stop(signal.SIGTERM) == 0
    outputs["log"] = stack.exporter.log()
    key_line = stack.certificate.decode().splitlines()[1]  # a line of the private key's base64
    forbidden = [SECRET, *REFRESH.values(), key_line, stack.assertion.read_text().strip(), "eyJ"]
    for where, text in outputs.items():
        for value in forbidden:
            assert value not in text, f"a credential leaked into {where}"


def test_a_tenant_of_the_china_cloud_asks_for_the_china_scope(tmp_path: Path) -> None:
    scenario = "seed: 5\ncloud: china\ntenants:\n" + _tenant("cn", 7, f"    client_secret: {SECRET}\n")
    sim = start_simulator(tmp_path, scenario)
    base = (
        f"api_url: {sim.url}\nlogin_url: {sim.url}\ntimeout: 3s\ntenants:\n  - name: cn\n"
        f"    tenant_id: cn.onmicrosoft.com\n    client_id: 30000000-0000-4000-8000-000000000007\n"
        f"    client_secret: {SECRET}\n"
    )
    try:
        for cloud, code in (("china", 0), ("global", 1)):
            config = tmp_path / f"{cloud}.yml"
            config.write_text(f"cloud: {cloud}\n{base}")
            done = subprocess.run(
                [*exporter_command(), f"--config.file={config}", "--once"],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert done.returncode == code, done.stderr
            if cloud == "global":  # the global resource does not exist in the China cloud: AADSTS500011
                assert (
                    'partnercenter_api_request_errors_total{endpoint="token",status_code="400",tenant="cn"} 1.0'
                    in done.stdout
                )
                assert "AADSTS500011" in done.stderr
    finally:
        sim.stop()


def test_demo_shows_a_certificate_tenant_and_an_app_user_tenant_without_mfa() -> None:
    done = subprocess.run(
        [*exporter_command(), "--demo", "--once"], capture_output=True, text=True, timeout=60, check=False
    )
    assert 'partnercenter_up{tenant="tailspin"} 1.0' in done.stdout
    assert 'partnercenter_credential_expiry_timestamp_seconds{tenant="tailspin"}' in done.stdout
    assert 'partnercenter_up{tenant="woodgrove"} 0.0' in done.stdout
    assert 'partnercenter_token_mfa{tenant="woodgrove"} 0.0' in done.stdout
    assert "PRIVATE KEY" not in done.stdout + done.stderr
