"""The two YAML loaders behind the config: libyaml first (fast), pure Python for error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
