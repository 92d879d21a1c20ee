"""A tenant's app credential: secret, certificate or federated assertion file, from config to token request."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.config import AssertionFile, Certificate, ConfigError, TenantConfig, describe_config, parse_config
from exporter.secret import Secret
from exporter.upstream.auth import CredentialError, token_form, token_has_mfa
from tests.fakes import certificate_pem

CLIENT_ID = "11111111-1111-4111-8111-111111111111"
TOKEN_URL = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
SCOPE = "https://api.partnercenter.microsoft.com/.default"


def _config(base: Path, credential: str, extra: str = "") -> str:
    return (
        "tenants:\n  - name: contoso\n    tenant_id: contoso.onmicrosoft.com\n"
        f"    client_id: {CLIENT_ID}\n    {credential}\n{extra}"
    )


def _parse(base: Path, credential: str, extra: str = "") -> TenantConfig:
    config = parse_config(_config(base, credential, extra), base_dir=base, environ={})
    return config.tenants[0]


def _pem_file(tmp_path: Path, name: str = "app.pem", days: float = 365, order: str = "key,cert") -> Path:
    key_pem, cert_pem, _ = certificate_pem(days)
    parts = {"key": key_pem, "cert": cert_pem}
    (tmp_path / name).write_bytes(b"".join(parts[p] for p in order.split(",")))
    return tmp_path / name


@pytest.mark.parametrize("order", ["key,cert", "cert,key"])
def test_certificate_file_gives_key_thumbprint_and_expiry(tmp_path: Path, order: str) -> None:
    pem = _pem_file(tmp_path, days=30, order=order)
    tenant = _parse(tmp_path, "client_certificate_file: app.pem")
    certificate = tenant.credential
    assert isinstance(certificate, Certificate)
    der = x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert certificate.thumbprint == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert abs(certificate.not_after - (time.time() + 30 * 86400)) < 120
    assert tenant.certificate is certificate


def _error(tmp_path: Path, credential: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(tmp_path, credential)
    return str(caught.value)


def test_certificate_file_problems_name_the_key(tmp_path: Path) -> None:
    key_pem, cert_pem, _ = certificate_pem()
    other_key, _, _ = certificate_pem()
    (tmp_path / "cert-only.pem").write_bytes(cert_pem)
    (tmp_path / "key-only.pem").write_bytes(key_pem)
    (tmp_path / "mismatch.pem").write_bytes(other_key + cert_pem)
    ec_key_pem, ec_cert_pem, _ = certificate_pem(key=ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "ec.pem").write_bytes(ec_key_pem + ec_cert_pem)
    rsa_key = serialization.load_pem_private_key(key_pem, None)
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (tmp_path / "encrypted.pem").write_bytes(encrypted + cert_pem)
    key = "tenants[0].client_certificate_file"
    assert _error(tmp_path, "client_certificate_file: cert-only.pem") == (
        f"{key}: cert-only.pem: no PEM private key found (the file needs the key and the certificate)"
    )
    assert _error(tmp_path, "client_certificate_file: key-only.pem") == (
        f"{key}: key-only.pem: no PEM certificate found (the file needs the key and the certificate)"
    )
    assert _error(tmp_path, "client_certificate_file: mismatch.pem") == (
        f"{key}: mismatch.pem: the private key does not belong to the certificate"
    )
    assert _error(tmp_path, "client_certificate_file: ec.pem") == (
        f"{key}: ec.pem: the private key must be RSA (Entra ID signs certificate credentials with RSA)"
    )
    assert _error(tmp_path, "client_certificate_file: encrypted.pem") == (
        f"{key}: encrypted.pem: the private key is encrypted; store it without a passphrase"
    )
    assert _error(tmp_path, "client_certificate_file: missing.pem") == (
        f"{key}: cannot read missing.pem: No such file or directory"
    )
    # The key material never shows in any of these messages.
    for name in ("mismatch.pem", "encrypted.pem"):
        message = _error(tmp_path, f"client_certificate_file: {name}")
        assert "PRIVATE KEY" not in message
        assert key_pem.decode().splitlines()[1] not in message


def test_a_key_or_certificate_on_a_curve_openssl_does_not_know_is_refused_by_key_path(tmp_path: Path) -> None:
    # cryptography raises UnsupportedAlgorithm, not ValueError, for such a curve; it once ended start-up.
    for command in (
        ["openssl", "ecparam", "-name", "secp112r1", "-genkey", "-noout", "-out", "k112.pem"],
        ["openssl", "req", "-new", "-x509", "-key", "k112.pem", "-subj", "/CN=app", "-out", "c112.pem"],
    ):
        subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    key_pem, _, _ = certificate_pem()
    (tmp_path / "ec112.pem").write_bytes((tmp_path / "k112.pem").read_bytes() + (tmp_path / "c112.pem").read_bytes())
    (tmp_path / "rsa-ec112.pem").write_bytes(key_pem + (tmp_path / "c112.pem").read_bytes())
    key = "tenants[0].client_certificate_file"
    assert _error(tmp_path, "client_certificate_file: ec112.pem").startswith(f"{key}: ec112.pem: the private key")
    assert _error(tmp_path, "client_certificate_file: rsa-ec112.pem").startswith(f"{key}: rsa-ec112.pem: the ")
    for name in ("ec112.pem", "rsa-ec112.pem"):
        assert "must be RSA" in _error(tmp_path, f"client_certificate_file: {name}")


def test_two_credentials_are_an_error_naming_both(tmp_path: Path) -> None:
    _pem_file(tmp_path)
    message = _error(tmp_path, "client_secret: s\n    client_certificate_file: app.pem")
    assert message == (
        "tenants[0]: client_secret and client_certificate_file are mutually exclusive: set one credential"
    )


def test_assertion_file_must_be_readable_and_not_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    key = "tenants[0].client_assertion_file"
    assert _error(tmp_path, "client_assertion_file: nope") == f"{key}: cannot read nope: No such file or directory"
    assert _error(tmp_path, "client_assertion_file: empty") == f"{key}: empty is empty"


def test_certificate_form_carries_a_signed_assertion_in_entras_format(tmp_path: Path) -> None:
    pem = _pem_file(tmp_path)
    tenant = _parse(tmp_path, "client_certificate_file: app.pem")
    form = token_form(tenant, SCOPE, TOKEN_URL, None)

    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in form
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header["alg"] == "PS256"
    assert isinstance(tenant.credential, Certificate)
    assert header["x5t#S256"] == tenant.credential.thumbprint
    public_key = x509.load_pem_x509_certificate(pem.read_bytes()).public_key()
    claims = jwt.decode(form["client_assertion"], public_key, algorithms=["PS256"], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["nbf"] <= time.time() < claims["exp"] <= claims["nbf"] + 600
    assert claims["jti"]
    again = token_form(tenant, SCOPE, TOKEN_URL, None)
    assert jwt.decode(again["client_assertion"], options={"verify_signature": False})["jti"] != claims["jti"]


def test_assertion_file_is_read_again_at_every_token_request(tmp_path: Path) -> None:
    token = tmp_path / "azure-identity-token"
    token.write_text("first.federated.token\n")
    tenant = _parse(tmp_path, "client_assertion_file: azure-identity-token")
    assert isinstance(tenant.credential, AssertionFile)
    assert token_form(tenant, SCOPE, TOKEN_URL, None)["client_assertion"] == "first.federated.token"
    token.write_text("rotated.federated.token")
    form = token_form(tenant, SCOPE, TOKEN_URL, None)
    assert form["client_assertion"] == "rotated.federated.token"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    token.unlink()
    with pytest.raises(CredentialError) as caught:
        token_form(tenant, SCOPE, TOKEN_URL, None)
    assert str(caught.value) == f"cannot read client_assertion_file {token}: No such file or directory"


def test_refresh_grant_of_a_public_client_sends_no_credential(tmp_path: Path) -> None:
    (tmp_path / "rt").write_text("refresh-1\n")
    config = parse_config(
        "tenants:\n  - name: c\n    tenant_id: c.onmicrosoft.com\n"
        f"    client_id: {CLIENT_ID}\n    refresh_token_file: rt\n",
        base_dir=tmp_path,
        environ={},
    )
    form = token_form(config.tenants[0], SCOPE, TOKEN_URL, Secret("refresh-2"))
    assert form == {
        "client_id": CLIENT_ID,
        "scope": f"{SCOPE} offline_access",  # else Entra's answer has no rotated refresh token
        "grant_type": "refresh_token",
        "refresh_token": "refresh-2",
    }


def test_refresh_grant_of_a_confidential_client_authenticates_the_app(tmp_path: Path) -> None:
    (tmp_path / "rt").write_text("refresh-1\n")
    pem = _pem_file(tmp_path)
    tenant = _parse(tmp_path, "client_certificate_file: app.pem", "    refresh_token_file: rt\n")
    form = token_form(tenant, SCOPE, TOKEN_URL, Secret("refresh-1"))
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == "refresh-1"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    public_key = x509.load_pem_x509_certificate(pem.read_bytes()).public_key()
    claims = jwt.decode(form["client_assertion"], public_key, algorithms=["PS256"], audience=TOKEN_URL)
    assert claims["iss"] == claims["sub"] == CLIENT_ID


def test_config_check_names_the_credential_but_never_its_content(tmp_path: Path) -> None:
    pem = _pem_file(tmp_path)
    config = parse_config(_config(tmp_path, "client_certificate_file: app.pem"), base_dir=tmp_path, environ={})
    line = describe_config(config).splitlines()[-1]
    assert f"client_certificate_file={pem}" in line
    assert isinstance(config.tenants[0].credential, Certificate)
    assert f"thumbprint={config.tenants[0].credential.thumbprint}" in line
    assert "PRIVATE" not in describe_config(config)


def _jwt(claims: dict[str, object]) -> Secret:
    return Secret(jwt.encode(claims, "k" * 32, algorithm="HS256"))


@pytest.mark.parametrize(
    ("token", "mfa"),
    [
        (_jwt({"amr": ["pwd", "mfa"]}), True),
        (_jwt({"amr": ["pwd"]}), False),
        (_jwt({"scp": "user_impersonation"}), False),
        (_jwt({"amr": "mfa"}), False),  # not a list: not the claim Partner Center reads
        (Secret("opaque-token"), None),
        (Secret("not.a.jwt"), None),
    ],
)
def test_mfa_claim_is_read_from_the_token_payload(token: Secret, mfa: bool | None) -> None:
    assert token_has_mfa(token) is mfa
