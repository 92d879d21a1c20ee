"""Strict YAML for every file the project reads (config, web config, simulator scenarios), and `ConfigError`.

One loader (libyaml's CSafeLoader when PyYAML has it, else SafeLoader) and one set of rules: a document holds
plain mappings, lists and scalars. Duplicate keys, aliases (so merge keys and "billion laughs" bombs; an anchor
no alias uses changes nothing), and tags beyond the core schema are refused, each with its position or key path.
Date-like scalars stay the strings they were written as. No error text quotes the document, which may hold a
secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_CORE: Final = "tag:yaml.org,2002:"
# The tags an untagged scalar, list or mapping resolves to; any other tag was written in the document.
_PLAIN_TAGS: Final = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map"))
_MERGE: Final = _CORE + "merge"
# PyYAML's pure-Python loader quotes these names, which are written unquoted values (`*secret`, `!x!secret`).
_NAMED: Final = re.compile(r"(found (?:undefined alias|undefined tag handle|duplicate anchor)) '[^']*'")
# Config files are small; the cap keeps a mistaken path (a log, a disk image) from being read whole.
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
# Where str.splitlines() breaks a line, escaped: an error is one log field or one line on stderr, whatever key or
# value it names (a quoted key may hold a line break).
_LINE_BREAKS: Final = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class ConfigError(Exception):
    """An invalid input file; `path` names the offending key ("" for the whole file), `message` holds no secret."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return text.translate(_LINE_BREAKS)


def read_text(path: Path) -> str:
    """A UTF-8 text file's content; every failure is a ConfigError naming the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError("", f"cannot read {path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"cannot read {path}: not valid UTF-8 (byte {exc.start})") from None


def load_yaml(text: str) -> object:
    """Parse one YAML document strictly; every problem is a ConfigError."""
    loader = None
    try:
        # In the try: PyYAML's pure-Python reader (no libyaml) refuses a control character here, not while parsing.
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError("", _describe(exc)) from None
    except yaml.reader.ReaderError as exc:
        line, column = text.count("\n", 0, exc.position) + 1, exc.position - text.rfind("\n", 0, exc.position)
        raise ConfigError(
            "", f"invalid YAML at line {line}, column {column}: character #x{exc.character:04x} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {type(exc).__name__}") from None
    except RecursionError:
        raise ConfigError("", "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


_Base: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """The safe loader, keeping dates as text and reporting a value that does not fit its tag by position."""

    def construct_object(self, node: Node, deep: bool = False) -> object:
        """Construct one node; `!!int ten` is a positioned error, not an exception quoting the value."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, KeyError):  # KeyError: `!!bool` of anything but a boolean word
            tag = node.tag.replace(_CORE, "!!")
            raise yaml.constructor.ConstructorError(
                None, None, f"value does not match its tag {tag}", node.start_mark
            ) from None


_Loader.add_constructor(_CORE + "timestamp", _Loader.construct_yaml_str)


def _check(root: Node) -> None:
    """Refuse aliases, merge keys, foreign tags and duplicate keys, naming the key path, depth first."""
    seen: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias is a node met twice
            raise ConfigError(path, f"{_at(node)}: anchors and aliases are not supported; write the value out")
        seen.add(id(node))
        if node.tag not in _PLAIN_TAGS:
            # The tag is not named: an unquoted secret that starts with ! is a tag.
            raise ConfigError(path, f"{_at(node)}: tags are not supported; quote a value that starts with !")
        if isinstance(node, SequenceNode):
            stack.extend((item, f"{path}[{index}]") for index, item in reversed(list(enumerate(node.value))))
        if not isinstance(node, MappingNode):
            continue
        first: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if key.tag == _MERGE:
                raise ConfigError(path, f"{_at(key)}: merge keys (<<) are not supported; write the keys out")
            if not isinstance(key, ScalarNode):
                continue  # a complex key: the reader of the document reports it as a key that is not a string
            ident = (key.tag, key.value)
            if ident in first:
                raise ConfigError(join(path, key.value), f"duplicate key {_at(key)} (first at line {first[ident]})")
            first[ident] = key.start_mark.line + 1
        for key, value in reversed(node.value):
            stack.append((value, join(path, key.value if isinstance(key, ScalarNode) else "?")))
            stack.append((key, path))


def join(path: str, key: object) -> str:
    """The key path `path.key`, or `key` at the top level."""
    return f"{path}.{key}" if path else str(key)


def _at(node: Node) -> str:
    return f"at line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def _describe(exc: yaml.MarkedYAMLError) -> str:
    """Describe a YAML error by position; PyYAML's own text quotes the line, which may hold a secret."""
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    # PyYAML phrases some problems as a continuation of the context ("but found another document").
    problem = _NAMED.sub(r"\1", (exc.problem or exc.context or "syntax error").removeprefix("but "))
    message = f"invalid YAML{where}: {problem}"
    if exc.problem and exc.context:
        context = exc.context
        if exc.context_mark is not None and exc.context_mark is not mark:
            context += f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        message += f" ({context})"
    return message
