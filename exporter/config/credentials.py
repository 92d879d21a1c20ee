"""A tenant's app credential, read and checked at load time: secret, certificate, or federated assertion file.

Microsoft Entra ID accepts a client secret, a JWT assertion signed with a certificate's private key, or a federated
token (Kubernetes workload identity) sent as the assertion: learn.microsoft.com/entra/identity-platform/
certificate-credentials and learn.microsoft.com/entra/workload-id/workload-identity-federation.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.config.yamlfile import ConfigError
from exporter.secret import Secret

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class Certificate:
    """A client certificate and its private key (RSA: what Entra accepts for certificate credentials)."""

    file: Path
    thumbprint: str  # base64url SHA-256 of the DER certificate: the assertion's `x5t#S256` header
    not_after: float  # Unix seconds
    # Equal certificates have equal thumbprints; the key object is not compared (nor shown).
    key: rsa.RSAPrivateKey = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AssertionFile:
    """A federated token file, read again at every token request (Kubernetes rotates it)."""

    file: Path

    def read(self) -> Secret:
        """The token in the file now; OSError when it cannot be read."""
        return read_token_file(self.file)


def read_token_file(file: Path) -> Secret:
    """The token a file holds now (a federated token, a refresh token), stripped; OSError when it cannot be read."""
    with file.open("rb") as handle:
        return Secret(handle.read(64 * 1024).decode("utf-8", "replace").strip())


Credential = Secret | Certificate | AssertionFile


def load_certificate(data: bytes, file: Path, shown: str, path: str) -> Certificate:
    """Parse a PEM file holding an unencrypted RSA private key and its certificate (in either order)."""
    # Imported here: cryptography adds ~8 MiB to the resident memory, and only certificate tenants need it.
    from cryptography import x509  # noqa: PLC0415
    from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    needs = "(the file needs the key and the certificate)"
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(path, f"{shown}: the private key is encrypted; store it without a passphrase") from None
    except ValueError:
        raise ConfigError(path, f"{shown}: no PEM private key found {needs}") from None
    except UnsupportedAlgorithm:  # an elliptic curve that OpenSSL does not know, for one
        raise ConfigError(
            path, f"{shown}: the private key must be RSA (Entra ID signs certificate credentials with RSA)"
        ) from None
    try:
        certificate = x509.load_pem_x509_certificate(data)
        certificate_key = certificate.public_key()
    except ValueError:
        raise ConfigError(path, f"{shown}: no PEM certificate found {needs}") from None
    except UnsupportedAlgorithm:
        raise ConfigError(path, f"{shown}: the certificate's key must be RSA, as the private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            path, f"{shown}: the private key must be RSA (Entra ID signs certificate credentials with RSA)"
        )
    if key.public_key() != certificate_key:
        raise ConfigError(path, f"{shown}: the private key does not belong to the certificate")
    return Certificate(
        file=file,
        thumbprint=base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA256())).rstrip(b"=").decode(),
        not_after=certificate.not_valid_after_utc.timestamp(),
        key=key,
    )


def check_writable_directory(directory: Path, shown: str, path: str) -> None:
    """Prove that a file can be created in `directory` (a rotated refresh token is written there)."""
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        raise ConfigError(
            path,
            f"cannot write in the directory of {shown}: {exc.strerror or type(exc).__name__} (rotated refresh "
            "tokens are written back there)",
        ) from None
