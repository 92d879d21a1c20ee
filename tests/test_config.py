"""Config loading: valid files, every invalid case with its exact message, and secret redaction."""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from exporter.config import (
    Config,
    ConfigError,
    Threshold,
    describe_config,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
)
from exporter.secret import Secret

DATA = Path(__file__).parent / "data" / "config"

# The secret values that live in tests/data/config; none may ever show up in output.
INLINE_SECRET = "inline-secret-VALUE-91d0"
FILE_SECRET = "file-secret-VALUE-3f9a"
FABRIKAM_TOKEN = "refresh-token-VALUE-77c1"
ADATUM_TOKEN = "refresh-token-VALUE-2b8e"
ENV_SECRET = "env-secret-VALUE-5c2d"
ALL_SECRETS = (INLINE_SECRET, FILE_SECRET, FABRIKAM_TOKEN, ADATUM_TOKEN, ENV_SECRET, "hunter2-VALUE", "VALUE")

FULL_ENV = {"CONTOSO_SECRET": ENV_SECRET, "ADATUM_TENANT": "adatum.onmicrosoft.com"}

TENANT = """\
  - name: contoso
    tenant_id: contoso.onmicrosoft.com
    client_id: 11111111-1111-4111-8111-111111111111
    client_secret: inline-secret-VALUE-91d0
"""


def parse(text: str, environ: dict[str, str] | None = None, base_dir: Path = DATA) -> Config:
    """Parse config text against the test data directory."""
    return parse_config(text, base_dir=base_dir, environ=environ or {})


def config_with(top: str = "", tenant_extra: str = "", environ: dict[str, str] | None = None) -> Config:
    """Parse a one-tenant config with extra top-level lines and extra tenant lines."""
    return parse(f"{top}tenants:\n{TENANT}{tenant_extra}", environ)


def assert_no_secret(text: str) -> None:
    """Fail if any known secret value appears in `text`."""
    for secret in ALL_SECRETS:
        assert secret not in text


# --- invalid configs: (file under tests/data/config, exact str(ConfigError)) -----------------------------

INVALID = [
    ("invalid-yaml-syntax.yml",
     "invalid YAML at line 6, column 1: found unexpected end of stream "
     "(while scanning a quoted scalar at line 5, column 20)"),
    ("invalid-yaml-indent.yml", "invalid YAML at line 2, column 10: mapping values are not allowed in this context"),
    ("invalid-yaml-bad-tag.yml", "invalid YAML at line 1, column 11: value does not match its tag !!int"),
    ("invalid-yaml-multiple-documents.yml",
     "invalid YAML at line 6, column 1: found another document "
     "(expected a single document in the stream at line 1, column 1)"),
    ("invalid-duplicate-key.yml", "interval: duplicate key at line 3, column 1 (first at line 1)"),
    ("invalid-duplicate-tenant-key.yml", "tenants[0].name: duplicate key at line 6, column 5 (first at line 2)"),
    ("invalid-top-level-list.yml", "the top level must be a mapping, got list"),
    ("invalid-top-level-scalar.yml", "the top level must be a mapping, got string"),
    ("invalid-empty.yml", "the config is empty: it needs at least `tenants`"),
    ("invalid-non-string-key.yml", "tenants[0]: keys must be strings, got integer"),
    ("invalid-unknown-key.yml", "tenant: unknown key (did you mean 'tenants'?)"),
    ("invalid-unknown-tenant-key.yml", "tenants[0].client_secert: unknown key (did you mean 'client_secret'?)"),
    ("invalid-interval-garbage.yml",
     'interval: invalid duration "10 minutes": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
    ("invalid-interval-zero.yml", "interval: must be a positive duration"),
    ("invalid-timeout-negative.yml", "timeout: must be a positive duration"),
    ("invalid-max-staleness-bool.yml",
     "max_staleness: must be a duration like 30s or a number of seconds, got boolean"),
    ("invalid-max-staleness-huge.yml", "max_staleness: must be at most 365d"),
    ("invalid-concurrency-string.yml", "concurrency: must be an integer, got string"),
    ("invalid-concurrency-zero.yml", "concurrency: must be between 1 and 1000"),
    ("invalid-cloud.yml", 'cloud: unknown cloud "azure": use global, usgov or china'),
    ("invalid-api-url-scheme.yml", "api_url: must be an http:// or https:// URL"),
    ("invalid-login-url-credentials.yml", "login_url: must not contain credentials"),
    ("invalid-state-file-type.yml", "state_file: must be a string, got list"),
    ("invalid-thresholds-order.yml", "thresholds.USD: warning (100000) is above critical (50000)"),
    ("invalid-thresholds-currency.yml", "thresholds.US: not a currency code: use three letters such as USD"),
    ("invalid-thresholds-value-type.yml", "thresholds.USD.warning: must be a number, got string"),
    ("invalid-thresholds-unknown-key.yml", "thresholds.USD.warn: unknown key (did you mean 'warning'?)"),
    ("invalid-thresholds-empty-entry.yml", "thresholds.USD: set warning, critical or both"),
    ("invalid-thresholds-list.yml", "thresholds: must be a mapping of currency code to thresholds, got list"),
    ("invalid-tenant-thresholds-duplicate-currency.yml",
     "tenants[0].thresholds.USD: duplicate currency USD (codes are case-insensitive)"),
    ("invalid-tenants-missing.yml", "tenants: required key is missing: list at least one tenant"),
    ("invalid-tenants-empty.yml", "tenants: must list at least one tenant"),
    ("invalid-tenants-mapping.yml", "tenants: must be a list of tenants, got mapping"),
    ("invalid-tenant-not-mapping.yml", "tenants[0]: must be a mapping, got string"),
    ("invalid-tenant-name.yml", "tenants[0].name: must consist of letters, digits, '_', '.' and '-'"),
    ("invalid-tenant-name-duplicate.yml", 'tenants[2].name: duplicate tenant name "contoso" (also tenants[0])'),
    ("invalid-tenant-id.yml",
     "tenants[0].tenant_id: must be a tenant GUID or a domain name such as contoso.onmicrosoft.com"),
    ("invalid-client-id-swapped.yml",
     "tenants[0].client_id: must be an application GUID like 00000000-0000-0000-0000-000000000000"),
    ("invalid-client-id-missing.yml", "tenants[0].client_id: required key is missing"),
    ("invalid-secret-both.yml",
     "tenants[0]: client_secret and client_secret_file are mutually exclusive: set one credential"),
    ("invalid-secret-missing.yml",
     "tenants[0]: app-only auth needs a credential: client_secret, client_secret_file, client_certificate_file or "
     "client_assertion_file "
     "(or set refresh_token_file for App+User auth)"),
    ("invalid-secret-empty.yml", "tenants[0].client_secret: must not be empty"),
    ("invalid-secret-type.yml", "tenants[0].client_secret: must be a string, got list"),
    ("invalid-secret-file-missing.yml",
     "tenants[2].client_secret_file: cannot read secrets/x: No such file or directory"),
    ("invalid-secret-file-empty.yml", "tenants[0].client_secret_file: secrets/empty is empty"),
    ("invalid-secret-file-directory.yml", "tenants[0].client_secret_file: cannot read secrets: Is a directory"),
    ("invalid-refresh-token-file-missing.yml",
     "tenants[0].refresh_token_file: cannot read tokens/missing.token: No such file or directory"),
    ("invalid-refresh-token-file-shared.yml", "tenants[1].refresh_token_file: file is already used by tenants[0]"),
    ("invalid-endpoint.yml", 'tenants[0].endpoint: unknown endpoint "invoices": use summary or summaries'),
    ("invalid-summaries-app-only.yml", "tenants[0].endpoint: summaries needs App+User auth: set refresh_token_file"),
    ("invalid-env-unset.yml", "tenants[0].client_secret: environment variable CONTOSO_SECRET is not set"),
    ("invalid-env-unset-interval.yml", "interval: environment variable POLL_INTERVAL is not set"),
    ("invalid-env-syntax.yml",
     "tenants[0].client_secret: invalid variable reference: use ${NAME}, or $$ for a literal $"),
]  # fmt: skip


@pytest.mark.parametrize(("filename", "expected"), INVALID, ids=[name for name, _ in INVALID])
def test_invalid_config_file_fails_with_exact_message(filename: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / filename, environ={})
    assert str(info.value) == expected
    assert_no_secret(str(info.value))


def test_every_invalid_file_is_in_the_table() -> None:
    on_disk = {p.name for p in DATA.glob("invalid-*.yml")}
    assert on_disk == {name for name, _ in INVALID}


def test_config_error_carries_path_and_message_separately() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "invalid-secret-file-missing.yml", environ={})
    assert info.value.path == "tenants[2].client_secret_file"
    assert info.value.message == "cannot read secrets/x: No such file or directory"
    whole_file = ConfigError("", "the config is empty")
    assert str(whole_file) == "the config is empty"


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "no-such-file.yml", environ={})
    assert str(info.value) == f"cannot read {DATA / 'no-such-file.yml'}: No such file or directory"
    assert info.value.path == ""


def test_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_bytes(b"interval: 10m\nname: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"cannot read {path}: not valid UTF-8 (byte 20)"


def test_control_character_is_reported_with_position() -> None:
    with pytest.raises(ConfigError) as info:
        parse("interval: 10m\ntimeout: 3\x000s\n")
    assert str(info.value) == "invalid YAML at line 2, column 11: character #x0000 is not allowed"


def test_secret_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ConfigError) as info:
        parse(f"tenants:\n{TENANT.replace('client_secret:', 'client_secret_file: pipe #')}", base_dir=tmp_path)
    assert str(info.value) == "tenants[0].client_secret_file: cannot read pipe: not a regular file"


def test_oversized_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(ConfigError) as info:
        parse(f"tenants:\n{TENANT.replace('client_secret:', 'client_secret_file: big #')}", base_dir=tmp_path)
    assert str(info.value) == "tenants[0].client_secret_file: cannot read big: larger than 64 KiB"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("deep: [1]\n", "deep: unknown key; expected one of interval, timeout, concurrency, max_staleness, "
         "payment_terms, cloud, api_url, login_url, thresholds, tenants, state_file"),
        ("Interval: 5m\n", "Interval: unknown key (did you mean 'interval'?)"),
        ("TIMEOUT: 5m\n", "TIMEOUT: unknown key (did you mean 'timeout'?)"),
        ("thresholds: {usd: {warning: .nan}}\n", "thresholds.usd.warning: must be a finite number"),
        ("thresholds: {USD: {warning: true}}\n", "thresholds.USD.warning: must be a number, got boolean"),
        ("thresholds: {1: {warning: 1}}\n", "thresholds: currency codes must be strings, got integer"),
        ("thresholds: {USD: 5}\n", "thresholds.USD: must be a mapping with warning and/or critical, got integer"),
        # A YAML date stays a string, so an impossible date is an invalid duration, not a crash.
        ("interval: 2001-02-30\n",
         'interval: invalid duration "2001-02-30": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
        ("api_url: https://[::1\n", "api_url: must be an http:// or https:// URL"),
        ("api_url: https://host:99999\n", "api_url: must be an http:// or https:// URL"),
        ("api_url: https://host/?a=b\n", "api_url: must not contain a query or fragment"),
        ("api_url: https:///path\n", "api_url: must be an http:// or https:// URL"),
        ("login_url: 'https://login.example.com /x'\n", "login_url: must be an http:// or https:// URL"),
        ("state_file: ''\n", "state_file: must not be empty"),
        ("concurrency: 2.5\n", "concurrency: must be an integer, got number"),
        ("cloud: ${CLOUD}\n", "cloud: environment variable CLOUD is not set"),
        ("a: 1\nb: [*missing]\n", "invalid YAML at line 2, column 5: found undefined alias"),
        ("a: !secret x\n", "a: at line 1, column 4: tags are not supported; quote a value that starts with !"),
        ("interval: " + "[" * 1000 + "\n", "invalid YAML at line 1, column 1010: exceeded maximum nesting depth "
         "(while increasing flow level at line 1, column 1010)"),
    ],
)  # fmt: skip
def test_invalid_top_level_snippets(snippet: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(top=snippet)
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("    name: other\n", "tenants[0].name: duplicate key at line 6, column 5 (first at line 2)"),
        ("    endpoint: [summary]\n", "tenants[0].endpoint: must be a string, got list"),
        ("    thresholds: {USD: {warning: 2, critical: 1}}\n",
         "tenants[0].thresholds.USD: warning (2) is above critical (1)"),
        ("    refresh_token_file: tokens\n", "tenants[0].refresh_token_file: cannot read tokens: Is a directory"),
        ("    refresh_token_file: ${TOKEN_DIR}/x\n",
         "tenants[0].refresh_token_file: environment variable TOKEN_DIR is not set"),
    ],
)  # fmt: skip
def test_invalid_tenant_snippets(snippet: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(tenant_extra=snippet)
    assert str(info.value) == expected


@pytest.mark.parametrize(
    "tenant_id",
    ["contoso", "contoso.onmicrosoft.com/../x", "-bad.example.com", "a..b.com", "1111-2222", "contoso.c0m", ""],
)
def test_tenant_id_must_be_guid_or_domain(tenant_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(f"tenants:\n{TENANT.replace('contoso.onmicrosoft.com', repr(tenant_id))}")
    assert info.value.path == "tenants[0].tenant_id"


@pytest.mark.parametrize(
    "tenant_id", ["contoso.onmicrosoft.com", "partner.example.co.uk", "2E5E7AB4-5c3a-4f1e-9d60-5a8ef2b8c1d0"]
)
def test_tenant_id_accepts_guid_and_domain(tenant_id: str) -> None:
    config = parse(f"tenants:\n{TENANT.replace('contoso.onmicrosoft.com', tenant_id)}")
    assert config.tenants[0].tenant_id == tenant_id


# --- valid configs ------------------------------------------------------------------------------------------


def test_minimal_config_gets_the_defaults() -> None:
    config = load_config(DATA / "valid-minimal.yml", environ={})
    assert config.interval == 600.0
    assert config.timeout == 30.0
    assert config.concurrency == 8
    assert config.max_staleness == 86400.0
    assert config.cloud == "global"
    assert config.api_url == "https://api.partnercenter.microsoft.com"
    assert config.login_url == "https://login.microsoftonline.com"
    assert config.state_file is None
    assert dict(config.thresholds) == {}
    (tenant,) = config.tenants
    assert tenant.name == "contoso"
    assert tenant.tenant_id == "contoso.onmicrosoft.com"
    assert tenant.client_id == "11111111-1111-4111-8111-111111111111"
    assert tenant.credential == Secret(INLINE_SECRET)
    assert tenant.credential_source == ("client_secret", "<set>")
    assert tenant.refresh_token_file is None
    assert tenant.refresh_token is None
    assert tenant.endpoint == "summary"
    assert tenant.auth_mode == "app"
    assert dict(tenant.thresholds) == {}


def test_full_config() -> None:
    config = load_config(DATA / "valid-full.yml", environ=FULL_ENV)
    assert (config.interval, config.timeout, config.concurrency, config.max_staleness) == (900, 45, 4, 86400)
    assert config.cloud == "usgov"
    # api_url overrides the cloud and loses its trailing slash; login_url still comes from the cloud.
    assert config.api_url == "https://pc-proxy.example.com/partnercenter"
    assert config.login_url == "https://login.microsoftonline.us"
    assert config.state_file == DATA / "state" / "exporter-state.json"
    usd_eur = {"USD": Threshold(warning=50000.0, critical=100000.0), "EUR": Threshold(None, 90000.5)}
    assert dict(config.thresholds) == usd_eur

    contoso, fabrikam, adatum = config.tenants
    assert contoso.credential == Secret(ENV_SECRET)
    assert contoso.auth_mode == "app"
    assert dict(contoso.thresholds) == usd_eur  # no own thresholds: the defaults

    assert fabrikam.credential == Secret(FILE_SECRET)  # trailing newline stripped
    assert fabrikam.credential_source == ("client_secret_file", str(DATA / "secrets" / "contoso"))
    assert fabrikam.refresh_token_file == DATA / "tokens" / "fabrikam.token"
    assert fabrikam.refresh_token is not None
    assert fabrikam.refresh_token.reveal() == FABRIKAM_TOKEN
    assert fabrikam.auth_mode == "app+user"
    assert fabrikam.endpoint == "summaries"
    assert dict(fabrikam.thresholds) == {"GBP": Threshold(warning=1000.0, critical=None)}  # replaces defaults

    assert adatum.name == "adatum.eu_1"
    assert adatum.tenant_id == "adatum.onmicrosoft.com"  # from ${ADATUM_TENANT}
    assert adatum.credential is None  # App+User without a client credential: a public client
    assert adatum.refresh_token is not None
    assert adatum.refresh_token.reveal() == ADATUM_TOKEN
    assert adatum.auth_mode == "app+user"
    assert dict(adatum.thresholds) == {}  # `thresholds: {}` opts out of the defaults


def test_relative_paths_resolve_against_the_config_directory_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "secret").write_text("from-etc\r\n")
    (tmp_path / "etc" / "config.yml").write_text(
        "state_file: state.json\n"
        f"tenants:\n{TENANT.replace('client_secret: inline-secret-VALUE-91d0', 'client_secret_file: secret')}"
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/config.yml"), environ={})
    assert config.state_file == tmp_path / "etc" / "state.json"
    assert config.tenants[0].credential == Secret("from-etc")


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    config = config_with(tenant_extra=f"    refresh_token_file: {tmp_path / 'token'}\n")
    assert config.tenants[0].refresh_token_file == tmp_path / "token"
    assert config.tenants[0].refresh_token == Secret("tok")


def test_secret_file_keeps_inner_whitespace_and_strips_only_trailing_newlines(tmp_path: Path) -> None:
    (tmp_path / "s").write_text(" spaced secret \n\n")
    config = parse(
        f"tenants:\n{TENANT.replace('client_secret: inline-secret-VALUE-91d0', 'client_secret_file: s')}",
        base_dir=tmp_path,
    )
    assert config.tenants[0].credential == Secret(" spaced secret ")


def test_load_config_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTOSO_SECRET", ENV_SECRET)
    monkeypatch.setenv("ADATUM_TENANT", "adatum.example.com")
    config = load_config(DATA / "valid-full.yml")
    assert config.tenants[2].tenant_id == "adatum.example.com"


@pytest.mark.parametrize(
    ("written", "environ", "expected"),
    [
        ("${A}", {"A": "one"}, "one"),
        ("x-${A}-${B}-y", {"A": "1", "B": "2"}, "x-1-2-y"),
        ("$${A}", {}, "${A}"),
        ("a$$b", {}, "a$b"),
        ("pa$word", {}, "pa$word"),
        ("trailing$", {}, "trailing$"),
        ("${A}", {"A": "${B}"}, "${B}"),  # expansion is not recursive
        ("${_under_9}", {"_under_9": "u"}, "u"),
    ],
)
def test_env_expansion(written: str, environ: dict[str, str], expected: str) -> None:
    config = parse(f"tenants:\n{TENANT.replace(INLINE_SECRET, repr(written))}", environ)
    assert config.tenants[0].credential == Secret(expected)


def test_env_expansion_applies_to_every_string_value(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s\n")
    environ = {
        "INTERVAL": "2m",
        "CLOUD": "china",
        "API": "http://127.0.0.1:8089",
        "DIR": str(tmp_path),
        "NAME": "northwind",
        "TID": "northwind.onmicrosoft.com",
        "CID": "55555555-5555-4555-8555-555555555555",
        "EP": "summary",
    }
    config = parse(
        "interval: ${INTERVAL}\ncloud: ${CLOUD}\napi_url: ${API}/\nstate_file: ${DIR}/state.json\n"
        "tenants:\n  - name: ${NAME}\n    tenant_id: ${TID}\n    client_id: ${CID}\n"
        "    client_secret_file: ${DIR}/secret\n    endpoint: ${EP}\n",
        environ,
    )
    assert config.interval == 120
    assert (config.cloud, config.api_url, config.login_url) == (
        "china",
        "http://127.0.0.1:8089",
        "https://login.chinacloudapi.cn",
    )
    assert config.state_file == tmp_path / "state.json"
    tenant = config.tenants[0]
    assert (tenant.name, tenant.tenant_id, tenant.client_id, tenant.endpoint) == (
        "northwind",
        "northwind.onmicrosoft.com",
        "55555555-5555-4555-8555-555555555555",
        "summary",
    )
    assert tenant.credential == Secret("s")


@pytest.mark.parametrize(
    ("cloud", "api_url", "login_url"),
    [
        ("global", "https://api.partnercenter.microsoft.com", "https://login.microsoftonline.com"),
        ("usgov", "https://api.partnercenter.microsoft.com", "https://login.microsoftonline.us"),
        ("china", "https://partner.partnercenterapi.microsoftonline.cn", "https://login.chinacloudapi.cn"),
    ],
)
def test_clouds(cloud: str, api_url: str, login_url: str) -> None:
    config = config_with(top=f"cloud: {cloud}\n")
    assert (config.cloud, config.api_url, config.login_url) == (cloud, api_url, login_url)


def test_a_duration_from_the_environment_may_be_a_number_of_seconds() -> None:
    assert config_with(top="interval: ${INTERVAL}\n", environ={"INTERVAL": "600"}).interval == 600


def test_a_host_name_the_http_client_would_refuse_is_a_config_error() -> None:
    # U+2011, a non-breaking hyphen pasted from a document: urlsplit takes it, IDNA does not.
    with pytest.raises(ConfigError) as info:
        config_with(top="login_url: https://login.microsoft\u2011online.com\n")
    assert str(info.value) == "login_url: must be an http:// or https:// URL with a valid host name"


def test_an_environment_value_that_is_not_utf8_is_a_config_error() -> None:
    # os.environ decodes such bytes to lone surrogates, which no request can encode.
    with pytest.raises(ConfigError) as info:
        parse(f"tenants:\n{TENANT.replace(INLINE_SECRET, '${S}')}", {"S": "secret\udcffvalue"})
    assert str(info.value) == "tenants[0].client_secret: must be valid UTF-8 text"


def test_url_overrides_lose_trailing_slashes() -> None:
    config = config_with(top="cloud: china\nlogin_url: http://127.0.0.1:8089//\napi_url: https://x.example/\n")
    assert config.cloud == "china"
    assert config.api_url == "https://x.example"
    assert config.login_url == "http://127.0.0.1:8089"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1d", 86400),
        ("1.5h", 5400),
        (".5s", 0.5),
        ("1m1s1ms", 61.001),
        (90, 90),
        (2.5, 2.5),
        ("365d", 365 * 86400),
        ("600", 600),  # seconds as text: what `${VAR}` gives
        ("0.5", 0.5),
    ],
)
def test_parse_duration_valid(value: object, seconds: float) -> None:
    assert parse_duration(value, "interval") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", 'invalid duration "": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
        ("10M", 'invalid duration "10M": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
        ("-5m", 'invalid duration "-5m": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
        (" 10m", 'invalid duration " 10m": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
        ("1h 30m", 'invalid duration "1h 30m": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
        ("x" * 100, f'invalid duration "{"x" * 40}...": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
        ("0s", "must be a positive duration"),
        (0, "must be a positive duration"),
        (-1, "must be a positive duration"),
        (float("nan"), "must be a positive duration"),
        (float("inf"), "must be at most 365d"),
        (10**400, "must be at most 365d"),
        ("366d", "must be at most 365d"),
        (True, "must be a duration like 30s or a number of seconds, got boolean"),
        (None, "must be a duration like 30s or a number of seconds, got null"),
        ([1], "must be a duration like 30s or a number of seconds, got list"),
    ],
)
def test_parse_duration_invalid(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "timeout")
    assert (info.value.path, info.value.message) == ("timeout", message)


@pytest.mark.parametrize(
    ("seconds", "text"), [(600, "10m"), (5400, "1h30m"), (86400, "24h"), (0.5, "500ms"), (61.001, "1m1s1ms")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_short_interval_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter.config"):
        config_with(top="interval: 30s\n")
    (record,) = caplog.records
    assert record.name == "exporter.config.settings"
    assert record.levelno == logging.WARNING
    assert "below one minute" in record.getMessage()
    assert record.__dict__["interval_seconds"] == 30.0


def test_one_minute_interval_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="exporter.config"):
        config_with(top="interval: 1m\n")
    assert caplog.records == []


def test_null_optional_values_count_as_unset() -> None:
    config = config_with(top="interval:\nthresholds:\n", tenant_extra="    endpoint:\n    thresholds:\n")
    assert config.interval == 600
    assert dict(config.thresholds) == {}
    assert config.tenants[0].endpoint == "summary"


def test_yaml_merge_keys_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse(
            "tenants:\n"
            "  - &base\n"
            "    name: contoso\n"
            "    tenant_id: contoso.onmicrosoft.com\n"
            "    client_id: 11111111-1111-4111-8111-111111111111\n"
            "    client_secret: x\n"
            "  - <<: *base\n"
            "    name: other\n"
        )
    assert str(info.value) == "tenants[1]: at line 7, column 5: merge keys (<<) are not supported; write the keys out"


def test_thresholds_currency_codes_are_upper_cased_and_may_be_one_sided() -> None:
    config = config_with(top="thresholds:\n  eur: {warning: -10}\n  Usd: {critical: 5}\n")
    assert dict(config.thresholds) == {"EUR": Threshold(-10.0, None), "USD": Threshold(None, 5.0)}
    assert dict(config.tenants[0].thresholds) == dict(config.thresholds)


def test_equal_thresholds_are_allowed() -> None:
    config = config_with(top="thresholds: {USD: {warning: 7, critical: 7}}\n")
    assert config.thresholds["USD"] == Threshold(7.0, 7.0)


def test_config_is_frozen() -> None:
    config = load_config(DATA / "valid-full.yml", environ=FULL_ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.interval = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tenants[0].name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.thresholds["XXX"] = Threshold(1, 2)  # type: ignore[index]
    with pytest.raises(TypeError):
        config.tenants[0].thresholds["XXX"] = Threshold(1, 2)  # type: ignore[index]


def test_loading_twice_gives_equal_configs_and_a_changed_value_does_not() -> None:
    first = load_config(DATA / "valid-full.yml", environ=FULL_ENV)
    second = load_config(DATA / "valid-full.yml", environ=FULL_ENV)
    assert first == second
    assert hash(first) == hash(second)
    assert len({*first.tenants, *second.tenants}) == 3
    rotated = load_config(DATA / "valid-full.yml", environ={**FULL_ENV, "CONTOSO_SECRET": "other"})
    assert rotated != first
    assert rotated.tenants[0] != first.tenants[0]
    assert rotated.tenants[1:] == first.tenants[1:]


# --- Secret and redaction -----------------------------------------------------------------------------------


def test_secret_is_redacted_everywhere_but_reveal() -> None:
    secret = Secret("s3cr3t")
    assert secret.reveal() == "s3cr3t"
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "********"
    assert f"{secret}" == "********"
    assert "s3cr3t" not in repr([secret, {"k": secret}])


def test_secret_compares_and_hashes_by_value() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2
    assert Secret("\ud800") == Secret("\ud800")  # lone surrogates from YAML escapes do not crash


def test_secret_survives_pickling_by_value() -> None:
    assert pickle.loads(pickle.dumps(Secret("a"))) == Secret("a")


def test_secret_rejects_non_strings_without_echoing() -> None:
    with pytest.raises(TypeError) as info:
        Secret(12345)  # type: ignore[arg-type]
    assert "12345" not in str(info.value)


def test_config_repr_and_str_hold_no_secret() -> None:
    config = load_config(DATA / "valid-full.yml", environ=FULL_ENV)
    assert_no_secret(repr(config))
    assert_no_secret(str(config))
    assert "Secret('********')" in repr(config)


def test_describe_config() -> None:
    config = load_config(DATA / "valid-full.yml", environ=FULL_ENV)
    assert describe_config(config) == "\n".join(
        [
            "interval=15m timeout=45s concurrency=4 max_staleness=24h payment_terms=<none>",
            "cloud=usgov api_url=https://pc-proxy.example.com/partnercenter login_url=https://login.microsoftonline.us"
            " scope=https://api.partnercenter.microsoft.com/.default",
            f"state_file={DATA / 'state' / 'exporter-state.json'}",
            "thresholds=EUR(critical:90000.5),USD(warning:50000,critical:100000)",
            "tenants=3",
            "  tenant=contoso tenant_id=contoso.onmicrosoft.com client_id=11111111-1111-4111-8111-111111111111"
            " auth=app endpoint=summary client_secret=<set>"
            " thresholds=EUR(critical:90000.5),USD(warning:50000,critical:100000)",
            "  tenant=fabrikam tenant_id=22222222-2222-4222-8222-222222222222"
            " client_id=33333333-3333-4333-8333-333333333333 auth=app+user endpoint=summaries"
            f" client_secret_file={DATA / 'secrets' / 'contoso'}"
            f" refresh_token_file={DATA / 'tokens' / 'fabrikam.token'} thresholds=GBP(warning:1000)",
            "  tenant=adatum.eu_1 tenant_id=adatum.onmicrosoft.com client_id=44444444-4444-4444-8444-444444444444"
            f" auth=app+user endpoint=summary credential=<none>"
            f" refresh_token_file={DATA / 'tokens' / 'adatum.token'} thresholds=<none>",
        ]
    )  # fmt: skip
    assert_no_secret(describe_config(config))


def test_describe_config_quotes_paths_with_spaces(tmp_path: Path) -> None:
    config = config_with(top=f"state_file: {tmp_path / 'my state.json'}\n")
    assert f'state_file="{tmp_path / "my state.json"}"' in describe_config(config).splitlines()


@pytest.mark.parametrize(
    "text",
    [
        # A broken quote on the secret's own line: PyYAML's message would quote the line.
        f'tenants:\n  - name: a\n    client_secret: "{INLINE_SECRET}\n',
        f"tenants:\n  - name: a\n    client_secret: {INLINE_SECRET}\n   bad: indent\n",
        f"tenants:\n  - name: a\n    client_secret: !!int {INLINE_SECRET}\n",
        f"tenants:\n  - name: a\n    client_secret: !!binary {INLINE_SECRET}\n",
        f"tenants:\n  - name: a\n    client_secret: !!float {INLINE_SECRET}\n",
        f"tenants:\n  - name: a\n    client_secret: !!bool {INLINE_SECRET}\n",  # PyYAML: a KeyError quoting it
        f"tenants:\n  - name: a\n    client_secret:\t{INLINE_SECRET}\x07\n",
        # Secrets put in the wrong field (swapped with the id) or given the wrong type.
        f"tenants:\n{TENANT.replace('11111111-1111-4111-8111-111111111111', INLINE_SECRET + 'x')}",
        f"tenants:\n{TENANT.replace('contoso.onmicrosoft.com', INLINE_SECRET)}",
        f"tenants:\n{TENANT.replace(INLINE_SECRET, '{' + INLINE_SECRET + ': 1}')}",
        f"tenants:\n{TENANT.replace(INLINE_SECRET, '[' + INLINE_SECRET + ']')}",
        f"tenants:\n{TENANT.replace(INLINE_SECRET, INLINE_SECRET + '${oops')}",
        f"tenants:\n{TENANT.replace(INLINE_SECRET, INLINE_SECRET + '${MISSING}')}",
        f"login_url: https://user:{INLINE_SECRET}@example.com\ntenants:\n{TENANT}",
        f"api_url: ftp://user:{INLINE_SECRET}@example.com\ntenants:\n{TENANT}",
    ],
)
def test_error_messages_never_echo_a_secret(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert INLINE_SECRET not in str(info.value)
    assert INLINE_SECRET not in repr(info.value)
    # `from None` keeps PyYAML's exception (which quotes the offending line) out of tracebacks too.
    assert INLINE_SECRET not in "".join(traceback.format_exception(info.value))


# --- limits, payment terms, values from the environment -----------------------------------------------------


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ("concurrency: 1001\n", "concurrency: must be between 1 and 1000"),
        ("concurrency: 1000000000\n", "concurrency: must be between 1 and 1000"),
        ("interval: 1.0e-9\n", "interval: must be at least 1s"),
        ("interval: 999ms\n", "interval: must be at least 1s"),
        ("payment_terms: 0\n", "payment_terms: must be a positive duration"),
        ("payment_terms: soon\n",
         'payment_terms: invalid duration "soon": use e.g. 500ms, 30s, 10m, 1h30m, 1d or seconds'),
    ],
)  # fmt: skip
def test_limits(top: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(top=top)
    assert str(info.value) == expected


def test_one_second_interval_and_a_thousand_slots_are_accepted() -> None:
    config = config_with(top="interval: 1s\nconcurrency: 1000\n")
    assert (config.interval, config.concurrency) == (1.0, 1000)


def test_payment_terms_default_and_per_tenant_override() -> None:
    config = parse(
        f"payment_terms: 30d\ntenants:\n{TENANT}{TENANT.replace('contoso', 'fabrikam')}    payment_terms: 45d\n"
    )
    assert config.payment_terms == 30 * 86400
    assert [t.payment_terms for t in config.tenants] == [30 * 86400, 45 * 86400]
    assert config_with().tenants[0].payment_terms is None


@pytest.mark.parametrize(
    ("top", "tenant_extra", "expected"),
    [
        ("cloud: ${SECRET}\n", "", "cloud: unknown cloud (the value of ${SECRET}): use global, usgov or china"),
        ("interval: ${SECRET}\n", "", "interval: invalid duration (the value of ${SECRET}): use e.g. 500ms, 30s, 10m, "
         "1h30m, 1d or seconds"),
        ("", "    endpoint: x${SECRET}\n",
         "tenants[0].endpoint: unknown endpoint (the value of ${SECRET}): use summary or summaries"),
        ("", "    refresh_token_file: ${SECRET}\n",
         "tenants[0].refresh_token_file: cannot read (the value of ${SECRET}): No such file or directory"),
    ],
)  # fmt: skip
def test_errors_name_the_variable_never_its_value(top: str, tenant_extra: str, expected: str) -> None:
    secret = "hunter2-VALUE-from-env"
    with pytest.raises(ConfigError) as info:
        config_with(top=top, tenant_extra=tenant_extra, environ={"SECRET": secret})
    assert str(info.value) == expected
    assert secret not in "".join(traceback.format_exception(info.value))


def test_duplicate_tenant_name_from_the_environment_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse(f"tenants:\n{TENANT}{TENANT.replace('name: contoso', 'name: ${NAME}')}", {"NAME": "contoso"})
    assert str(info.value) == "tenants[1].name: duplicate tenant name (the value of ${NAME}) (also tenants[0])"


def test_refresh_token_file_needs_a_writable_directory(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    token = tmp_path / "ok.token"
    token.write_text("tok\n")
    with pytest.raises(ConfigError) as info:
        parse(
            f"tenants:\n{TENANT}    refresh_token_file: not-a-dir/tok\n",
            base_dir=tmp_path,
        )
    # Unreadable first: a token that cannot be read cannot be refreshed either.
    assert str(info.value) == "tenants[0].refresh_token_file: cannot read not-a-dir/tok: Not a directory"
    assert parse(f"tenants:\n{TENANT}    refresh_token_file: ok.token\n", base_dir=tmp_path).tenants[0].refresh_token


def test_refresh_token_file_in_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "t.token").write_text("tok\n")
    config = tmp_path / "config.yml"
    config.write_text(f"tenants:\n{TENANT}    refresh_token_file: tokens/t.token\n")
    tokens.chmod(0o555)
    check = [sys.executable, "-m", "exporter", f"--config.file={config}", "--config.check"]
    if os.geteuid() == 0:
        # Root writes anywhere: check without the capability that lets it.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        check = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *check]
    try:
        done = subprocess.run(check, capture_output=True, text=True, check=False, timeout=60)
    finally:
        tokens.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert (
        "tenants[0].refresh_token_file: cannot write in the directory of tokens/t.token: Permission denied "
        "(rotated refresh tokens are written back there)"
    ) in done.stderr
