"""The strict YAML loader every file of the project goes through (config, web config, scenarios)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import yamlfile
from exporter.config.yamlfile import ConfigError, load_yaml, read_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\na: 2\n", "a: duplicate key at line 2, column 1 (first at line 1)"),
        ("t:\n  - {k: 1, k: 2}\n", "t[0].k: duplicate key at line 2, column 12 (first at line 2)"),
        ("x: &a [1]\ny: *a\n", "y: at line 1, column 4: anchors and aliases are not supported; write the value out"),
        ("a: !!binary aGk=\n", "a: at line 1, column 4: tags are not supported; quote a value that starts with !"),
        (
            "a: !!python/object:os.system ls\n",
            "a: at line 1, column 4: tags are not supported; quote a value that starts with !",
        ),
        ("a: !secret x\n", "a: at line 1, column 4: tags are not supported; quote a value that starts with !"),
        ("<<: {a: 1}\n", "at line 1, column 1: merge keys (<<) are not supported; write the keys out"),
        ("b: !!int ten\n", "invalid YAML at line 1, column 4: value does not match its tag !!int"),
        ("a: b: c\n", "invalid YAML at line 1, column 5: mapping values are not allowed in this context"),
        ("a: 1\n---\nb: 2\n", "invalid YAML at line 2, column 1: found another document "
         "(expected a single document in the stream at line 1, column 1)"),
        ("a: 1\x00\n", "invalid YAML at line 1, column 5: character #x0000 is not allowed"),
    ],
)  # fmt: skip
def test_refusals_name_the_position_or_key_path(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml(text)
    assert str(info.value) == expected


def test_a_merge_key_bomb_is_refused_at_its_first_alias() -> None:
    # Each level merges the previous one nine times: ~4e8 keys if built, 777 bytes as text.
    levels = ["l0: &l0 {" + ", ".join(f"k{i}: v" for i in range(9)) + "}"]
    for n in range(1, 9):
        levels.append(f"l{n}: &l{n} {{<<: [{', '.join([f'*l{n - 1}'] * 9)}]}}")
    text = "\n".join(levels) + "\n"
    with pytest.raises(ConfigError) as info:
        load_yaml(text)
    assert "anchors and aliases are not supported" in str(info.value) or "merge keys" in str(info.value)


@pytest.fixture(params=["libyaml", "python"])
def loader_module(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """exporter.config.yamlfile as imported with libyaml, and a separate copy as imported by a PyYAML without it."""
    if request.param == "libyaml":
        return yamlfile
    # Only the pure-Python loader's messages quote the line (libyaml's marks carry no snippet); the module falls
    # back to it where PyYAML was built without libyaml.
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    spec = importlib.util.spec_from_file_location("yamlfile_without_libyaml", yamlfile.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._Loader.__mro__[1] is yaml.SafeLoader
    return module


@pytest.mark.parametrize(
    "text",
    ["a: {secret}: x\n", "a: !!int {secret}\n", "a: [{secret}\n", "a: '{secret}\x01'\n", "a: {secret}\n b: c\n"],
)
def test_errors_never_quote_the_document(loader_module: ModuleType, text: str) -> None:
    secret = "hunter2-very-secret"
    with pytest.raises(loader_module.ConfigError) as info:
        loader_module.load_yaml(text.format(secret=secret))
    assert str(info.value).startswith("invalid YAML at line ")
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !{secret}\n", "a: at line 1, column 4: tags are not supported; quote a value that starts with !"),
        ("a: !!{secret}\n", "a: at line 1, column 4: tags are not supported; quote a value that starts with !"),
        ("a: *{secret}\n", "invalid YAML at line 1, column 4: found undefined alias"),
        ("a: !x!{secret} y\n", "invalid YAML at line 1, column 4: found undefined tag handle"),
    ],
)
def test_an_unquoted_secret_read_as_a_tag_or_alias_is_not_named(
    loader_module: ModuleType, text: str, message: str
) -> None:
    # YAML reads an unquoted value that starts with ! as a tag and one that starts with * as an alias.
    with pytest.raises(loader_module.ConfigError) as info:
        loader_module.load_yaml(text.format(secret="hunter2-very-secret"))
    assert str(info.value).startswith(message)
    assert "hunter2" not in str(info.value)


def test_dates_stay_the_text_they_were_written_as() -> None:
    assert load_yaml("d: 2026-11-01\nt: 2026-11-01T00:00:00Z\n") == {"d": "2026-11-01", "t": "2026-11-01T00:00:00Z"}


def test_empty_document_is_none() -> None:
    assert load_yaml("") is None
    assert load_yaml("# only a comment\n") is None


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(document=_DOCUMENTS, flow=st.booleans())
@settings(max_examples=200, deadline=None)
def test_plain_documents_load_as_pyyaml_loads_them(document: object, flow: bool) -> None:
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    assert load_yaml(text) == yaml.safe_load(text)


def test_read_text_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_text(tmp_path / "missing.yml")
    assert str(info.value) == f"cannot read {tmp_path / 'missing.yml'}: No such file or directory"
    (tmp_path / "latin1.yml").write_bytes(b"a: \xe9\n")
    with pytest.raises(ConfigError) as info:
        read_text(tmp_path / "latin1.yml")
    assert str(info.value) == f"cannot read {tmp_path / 'latin1.yml'}: not valid UTF-8 (byte 3)"
