"""Property tests: whatever text or structure reaches the config parser, it yields a Config or a ConfigError."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import Config, ConfigError, format_duration, parse_config, parse_duration
from exporter.secret import Secret
from tests.yamlfuzz import PUNCTUATION, replaced, scalars, structures

DATA = Path(__file__).parent / "data" / "config"
SECRET = "fuzz-secret-VALUE-0c4e"
ENVIRON = {"CONTOSO_SECRET": SECRET, "EMPTY": "", "INTERVAL": "5m"}

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    "interval", "timeout", "concurrency", "max_staleness", "cloud", "api_url", "login_url", "thresholds",
    "tenants", "state_file", "name", "tenant_id", "client_id", "client_secret", "client_secret_file",
    "refresh_token_file", "endpoint", "warning", "critical", "USD", "eur",
]  # fmt: skip

# Values that get past the type checks: real durations, URLs, ids and paths that exist in tests/data/config.
PLAUSIBLE: st.SearchStrategy[object] = st.sampled_from(
    [
        "10m", "1h30m", "500ms", "0s", "-1m", 30, 0, -3, 2.5, True, None, "global", "usgov", "china", "mars",
        "https://example.com/", "ftp://x", "http://u:p@h", "contoso", "a b", "contoso.onmicrosoft.com",
        "11111111-1111-4111-8111-111111111111", "secrets/contoso", "secrets/empty", "secrets", "tokens/adatum.token",
        "missing/file", "summary", "summaries", "${CONTOSO_SECRET}", "${UNSET}", "${EMPTY}", "$${X}", "${", "",
        [], {}, float("nan"), float("inf"), 10**30,
    ]
)  # fmt: skip

SCALARS = scalars(PLAUSIBLE)
STRUCTURES = structures(SCALARS, KEYS)

VALID: dict[str, Any] = {
    "interval": "10m",
    "thresholds": {"USD": {"warning": 1, "critical": 2}},
    "tenants": [
        {
            "name": "contoso",
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-1111-4111-8111-111111111111",
            "client_secret": "${CONTOSO_SECRET}",
        },
        {
            "name": "adatum",
            "tenant_id": "adatum.onmicrosoft.com",
            "client_id": "22222222-2222-4222-8222-222222222222",
            "refresh_token_file": "tokens/adatum.token",
            "endpoint": "summaries",
        },
    ],
}

# Where a mutation may land: a top-level key, or a key of one of the tenants.
SLOTS = [(key,) for key in ("interval", "timeout", "concurrency", "max_staleness", "cloud", "api_url",
                            "login_url", "thresholds", "state_file", "bogus")] + [
    ("tenants", index, key)
    for index in (0, 1)
    for key in ("name", "tenant_id", "client_id", "client_secret_file", "refresh_token_file", "endpoint",
                "thresholds", "bogus")
]  # fmt: skip


def outcome(text: str) -> Config | ConfigError:
    """Parse `text`; return the Config or the ConfigError. Any other exception fails the test."""
    try:
        return parse_config(text, base_dir=DATA, environ=ENVIRON)
    except ConfigError as exc:
        return exc


def assert_sane(result: Config | ConfigError) -> None:
    """A ConfigError has a printable message without the secret; a Config has typed parts."""
    if isinstance(result, ConfigError):
        assert isinstance(result.path, str)
        assert result.message
        assert SECRET not in str(result)
    else:
        assert result.tenants
        assert result.interval > 0
        assert SECRET not in repr(result)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    assert_sane(outcome(text))


@FUZZ
@given(PUNCTUATION)
def test_yaml_punctuation_soup(text: str) -> None:
    assert_sane(outcome(text))


@FUZZ
@given(STRUCTURES)
def test_arbitrary_yaml_structures(document: object) -> None:
    assert_sane(outcome(yaml.safe_dump(document, allow_unicode=True)))


@FUZZ
@given(st.sampled_from(SLOTS), STRUCTURES)
def test_one_field_of_a_valid_config_replaced(slot: tuple[Any, ...], value: object) -> None:
    result = outcome(replaced(VALID, slot, value))
    assert_sane(result)
    if isinstance(result, ConfigError):
        # The document is valid YAML, so the error names a key: the replaced one, or for a tenant field
        # possibly a sibling it clashes with (a duplicate name, a shared token file).
        if slot[0] == "tenants":
            assert result.path.startswith("tenants["), result
        else:
            # A list put there is named by index: `interval[1]` (an alias PyYAML wrote for a repeated list).
            assert result.path == slot[0] or result.path.startswith((f"{slot[0]}.", f"{slot[0]}[")), result


def test_the_unmutated_document_is_valid() -> None:
    """Guards the mutation test: without this, it could pass by rejecting everything."""
    result = outcome(yaml.safe_dump(VALID))
    assert isinstance(result, Config)
    assert result.tenants[0].credential == Secret(SECRET)


@FUZZ
@given(st.text(min_size=1, max_size=40))
def test_any_secret_survives_dollar_escaping(secret: str) -> None:
    document = copy.deepcopy(VALID)
    document["tenants"][0]["client_secret"] = secret.replace("$", "$$")
    # ASCII-only dumping escapes every other character: PyYAML's unicode output loses a bare NEL (U+0085).
    result = outcome(yaml.safe_dump(document))
    assert isinstance(result, Config)
    assert result.tenants[0].credential == Secret(secret)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 500), st.sampled_from(["ms", "s", "m", "h", "d"])), min_size=1, max_size=4))
def test_duration_strings_add_up(parts: list[tuple[int, str]]) -> None:
    unit_seconds = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    text = "".join(f"{number}{unit}" for number, unit in parts)
    total = sum(number * unit_seconds[unit] for number, unit in parts)
    if 0 < total <= 365 * 86400:
        assert abs(parse_duration(text, "interval") - total) < 1e-6
    else:
        with pytest.raises(ConfigError):
            parse_duration(text, "interval")


@FUZZ
@given(st.integers(1, 365 * 86400 * 1000))
def test_format_duration_round_trips(millis: int) -> None:
    seconds = millis / 1000
    assert abs(parse_duration(format_duration(seconds), "interval") - seconds) < 1e-6
