"""Reading the config's YAML safely: size, nesting and alias expansion bounded, duplicate keys
refused (a second `carcosa:` would otherwise silently replace the first host)."""
from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
MAX_VALUES = 300_000  # strings, numbers, lists and mappings, counting every alias expansion


class YamlProblem(ValueError):
    """The text is not a config offsite will read; the message names where and why."""


class _Bounds:
    """Mixed into a loader before yaml's Composer: counts the nodes as they are composed and
    refuses nesting deeper than MAX_DEPTH, so a hostile file stops early instead of costing
    minutes and gigabytes (the composer is recursive and keeps every node)."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH or self._nodes > MAX_VALUES:
                mark = self.peek_event().start_mark  # type: ignore[attr-defined]
                what = (f"nested deeper than {MAX_DEPTH} levels" if self._depth > MAX_DEPTH
                        else f"more than {MAX_VALUES} values")
                raise YamlProblem(f"{what} at line {mark.line + 1}: that is not a config")
            return super().compose_node(parent, index)  # type: ignore[misc, no-any-return]
        finally:
            self._depth -= 1


if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class _BoundedLoader(  # type: ignore[misc]
            _Bounds, Composer, CParser, SafeConstructor, Resolver):
        """libyaml scans and parses (fast, and it refuses runaway nesting itself); yaml's own
        Composer builds the nodes, so _Bounds sees each one."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
else:  # pragma: no cover - PyYAML wheels ship libyaml
    class _BoundedLoader(_Bounds, yaml.SafeLoader):  # type: ignore[no-redef]
        pass


def decode_config_bytes(raw: bytes) -> str:
    """The file's text; raises YamlProblem for an oversized or non-UTF-8 file."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise YamlProblem(f"the file is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB: "
                          "that is not a config")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlProblem(f"not UTF-8 text (byte {exc.start}): is this the config file?") from None


def load_yaml(text: str) -> Any:
    """The one YAML document in `text` as plain data.

    Raises YamlProblem for duplicate keys, deep nesting or an alias bomb, and yaml.YAMLError
    for syntax errors."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_values(node)
        _refuse_duplicate_keys(loader, node, [], set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicate_keys(loader: SafeConstructor, node: Node, path: list[str],
                           seen: set[int]) -> None:
    """Walk the node graph once (an alias is the same node object, so `seen` keeps an alias
    bomb from being walked exponentially) and refuse a key given twice in one mapping. Keys
    are compared as YAML builds them: `carcosa` and "carcosa" are one key, as are `yes`, `on`
    and `true`."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                _refuse_duplicate_keys(loader, value_node, path, seen)
                continue
            key = loader.construct_object(key_node)
            text = str(key_node.value)
            line = key_node.start_mark.line + 1
            where = ".".join([*path, text])
            if key in first_line:
                raise YamlProblem(
                    f"At '{where}': duplicate key {text!r} at line {line} (first at line "
                    f"{first_line[key]}): YAML keeps only the last one, so remove or rename "
                    "one of them")
            first_line[key] = line
            _refuse_duplicate_keys(loader, value_node, [*path, text], seen)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(loader, item, [*path, str(index)], seen)


def _count_values(root: Node) -> None:
    """Count the values the document expands to (aliases included) and stop at MAX_VALUES:
    a few lines of nested aliases ("billion laughs") expand to billions."""
    count = 0
    pending = [root]
    while pending:
        node = pending.pop()
        count += 1
        if count > MAX_VALUES:
            raise YamlProblem(f"the document expands to more than {MAX_VALUES} values "
                              "(nested aliases?): that is not a config")
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                pending += (key_node, value_node)
        elif isinstance(node, SequenceNode):
            pending += node.value
