"""`--config.check`: a summary of a valid config, one line per tenant, secrets shown only as `<set>`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

from exporter.config.fields import number_text
from exporter.config.settings import Config, Threshold


def describe_config(config: Config) -> str:
    """A multi-line summary of `config` in logfmt-like `key=value` pairs."""
    lines = [
        _fields(
            interval=format_duration(config.interval),
            timeout=format_duration(config.timeout),
            concurrency=str(config.concurrency),
            max_staleness=format_duration(config.max_staleness),
            payment_terms=format_duration(config.payment_terms) if config.payment_terms else "<none>",
        ),
        _fields(cloud=config.cloud, api_url=config.api_url, login_url=config.login_url, scope=config.scope),
        _fields(state_file=str(config.state_file) if config.state_file else "<none>"),
        _fields(thresholds=_thresholds(config.thresholds)),
        _fields(tenants=str(len(config.tenants))),
    ]
    for tenant in config.tenants:
        key, shown = tenant.credential_source
        values = {
            "tenant": tenant.name,
            "tenant_id": tenant.tenant_id,
            "client_id": tenant.client_id,
            "auth": tenant.auth_mode,
            "endpoint": tenant.endpoint,
            **({key: shown} if key else {"credential": "<none>"}),
        }
        if tenant.certificate is not None:
            values["thumbprint"] = tenant.certificate.thumbprint
        if tenant.refresh_token_file:
            values["refresh_token_file"] = str(tenant.refresh_token_file)
        if tenant.payment_terms:
            values["payment_terms"] = format_duration(tenant.payment_terms)
        values["thresholds"] = _thresholds(tenant.thresholds)
        lines.append("  " + _fields(**values))
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """Seconds the way they are written in the config: `1h30m`, `45s`, `500ms`."""
    millis = round(seconds * 1000)
    if millis == 0:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _thresholds(thresholds: Mapping[str, Threshold]) -> str:
    """Thresholds compactly, without `=` so they need no quotes: `USD(warning:50000,critical:1e5)`."""
    parts = []
    for code, threshold in sorted(thresholds.items()):
        levels = [f"{name}:{number_text(level)}" for name, level in asdict(threshold).items() if level is not None]
        parts.append(f"{code}({','.join(levels)})")
    return ",".join(parts) or "<none>"


def _fields(**values: str) -> str:
    """key=value pairs, quoting values that would otherwise be ambiguous."""
    return " ".join(f"{key}={_value(value)}" for key, value in values.items())


def _value(value: str) -> str:
    if value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
