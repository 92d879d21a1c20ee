"""The two YAML loaders behind the config: libyaml first (fast), pure Python for error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import config

VALID = sorted((Path(__file__).parent / "data" / "config").glob("valid-*.yml"))


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_libyaml_loader_is_used_when_available() -> None:
    assert config._FastStrictLoader is not None


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_both_loaders_build_the_same_values(path: Path) -> None:
    assert config._FastStrictLoader is not None
    text = path.read_text()
    fast = config._construct(text, config._FastStrictLoader)
    slow = config._construct(text, config._StrictLoader)
    assert fast == slow
    assert fast  # a real document, not an empty one


def test_a_document_libyaml_rejects_gets_the_python_loaders_message() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse_config("tenants: [\n", base_dir=Path(), environ={})
    assert str(err.value).startswith("invalid YAML at line 2")


PLAIN_CORNERS = [
    "",
    "# only a comment\n",
    "plain",
    "[1, 2.5, -3, 0x1f, 0o17, .inf, -.nan, ~, null, true, False, yes]",
    "a: 2026-11-26\nb: 2026-11-26T10:00:00Z\nc: '2026-11-26'\nd: 1_000\ne: 1e3\nf: '1'\n",
    "1: one\n'1': string one\n1.0: float one\ntrue: t\n~: n\n",
    's: |\n  two\n  lines\nf: >-\n  folded\n  text\nq: "tab\\there"\nu: "\\u00e9\\U0001F600"\n',
    "nested:\n  - {a: [1, {b: [], c: {}}], d: ''}\n  - - x\n    - y\n  -\n",
    "tenants:\n  - name: a\n    tenant_id: a.onmicrosoft.com\n  - name: b\n    client_secret: ${X}\n",
]
NOT_PLAIN = [
    "a: &x 1\nb: *x\n",
    "base: &b {x: 1}\nderived:\n  <<: *b\n",
    "a: !!str 1\n",
    "a: !custom 1\n",
    "a: 1\na: 2\n",
    "? [1, 2]\n: complex key\n",
    "--- 1\n--- 2\n",
    "a: {b: 1, b: 2}\n",
]


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("text", [*PLAIN_CORNERS, *(p.read_text() for p in VALID)])
def test_values_built_from_events_equal_the_composed_ones(text: str) -> None:
    assert config._FastStrictLoader is not None
    assert config._construct_from_events(text, config._FastStrictLoader) == config._construct(
        text, config._FastStrictLoader
    )


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_but_a_plain_document_is_left_to_the_composing_loader(text: str) -> None:
    assert config._FastStrictLoader is not None
    with pytest.raises(config._NotPlainError):
        config._construct_from_events(text, config._FastStrictLoader)


def test_a_duplicate_key_is_still_named_with_its_path() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse_config("interval: 1m\ntenants: []\ninterval: 2m\n", base_dir=Path(), environ={})
    assert str(err.value).startswith("interval: duplicate key at line 3")


_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12), st.dates()
)
_DOCUMENTS = st.recursive(
    _SCALAR,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_SCALAR, children, max_size=4),
    max_leaves=20,
)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
@given(document=_DOCUMENTS, flow=st.booleans())
@settings(max_examples=200, deadline=None)
def test_any_dumped_document_builds_the_same_values_either_way(document: object, flow: bool) -> None:
    assert config._FastStrictLoader is not None
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    composed = config._construct(text, config._FastStrictLoader)
    try:
        from_events = config._construct_from_events(text, config._FastStrictLoader)
    except config._NotPlainError:
        return  # left to composing, which built `composed`
    assert from_events == composed
