"""What the property tests of the files the project reads share: config, web config and simulator scenarios."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import yaml
from hypothesis import strategies as st

# YAML's punctuation and a few letters: text that the YAML parser gets far into before it fails.
PUNCTUATION = st.text(alphabet=":-[]{}&*!|>'\"%@`#,?\n\t $\\{}0aé", max_size=200)


def scalars(plausible: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Any YAML scalar, and the file's `plausible` values (those that get past its type checks) often."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        plausible,
    )


def structures(leaves: st.SearchStrategy[object], keys: Sequence[str]) -> st.SearchStrategy[object]:
    """Lists and mappings of `leaves`, keyed by the file's own `keys` or any text."""
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(list(keys)), st.text(max_size=8)), children, max_size=5),
        ),
        max_leaves=25,
    )


def replaced(document: dict[str, Any], slot: tuple[Any, ...], value: object) -> str:
    """`document` as YAML text, with the value at `slot` (a path of keys and indexes) replaced by `value`."""
    document = copy.deepcopy(document)
    target: Any = document
    for step in slot[:-1]:
        target = target[step]
    target[slot[-1]] = value
    return yaml.safe_dump(document, allow_unicode=True)
