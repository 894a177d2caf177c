"""YAML read into a tree that remembers where every node came from.

PyYAML's plain `safe_load` forgets positions, and a policy author needs `FILE:LINE:COL` for every mistake,
including mistakes found long after parsing (an undefined list, a bad glob inside a list). So we compose
the node graph and convert it into small frozen nodes that carry their `Location`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import yaml

from guard.errors import Location

Scalar: TypeAlias = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class YScalar:
    value: Scalar
    loc: Location


@dataclass(frozen=True, slots=True)
class YSeq:
    items: tuple[YNode, ...]
    loc: Location


@dataclass(frozen=True, slots=True)
class YMap:
    entries: tuple[tuple[YScalar, YNode], ...]
    loc: Location


YNode: TypeAlias = YScalar | YSeq | YMap


class YamlSyntaxError(Exception):
    """Raised with the location of the first syntax error; YAML cannot recover past one."""

    def __init__(self, message: str, loc: Location) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc


# libyaml's composer keeps the same line/column marks at about a tenth of the cost (26 ms -> 2 ms on
# coding-agent.yaml), which is most of `guard run`'s policy load; the pure-Python one where it is absent.
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _loc(file: str, mark: yaml.Mark | None) -> Location:
    if mark is None:
        return Location(file)
    return Location(file, mark.line + 1, mark.column + 1)


def parse_yaml(text: str, file: str) -> YNode | None:
    """Parse one YAML document; None for an empty one."""
    try:
        root = yaml.compose(text, Loader=_COMPOSER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(f"YAML syntax: {problem}", _loc(file, mark)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML syntax: {exc}", Location(file)) from None
    if root is None:
        return None
    constructor = yaml.SafeLoader("")
    return _convert(root, file, constructor, depth=0, budget=[MAX_NODES])


MAX_NODES = 200_000  # aliases can make a small file expand exponentially ("billion laughs")


def _convert(node: yaml.Node, file: str, constructor: yaml.SafeLoader, depth: int,
             budget: list[int]) -> YNode:
    loc = _loc(file, node.start_mark)
    if depth > 64:
        raise YamlSyntaxError("YAML nesting deeper than 64 levels", loc)
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlSyntaxError(f"YAML expands to more than {MAX_NODES} nodes (aliases?)", loc)
    if isinstance(node, yaml.ScalarNode):
        try:
            value = constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise YamlSyntaxError(f"bad scalar: {exc}", loc) from None
        if not isinstance(value, str | int | float | bool) and value is not None:
            # timestamps, binary: a policy has no use for them, so keep the source text
            value = str(node.value)
        return YScalar(value, loc)
    if isinstance(node, yaml.SequenceNode):
        return YSeq(tuple(_convert(item, file, constructor, depth + 1, budget) for item in node.value), loc)
    if isinstance(node, yaml.MappingNode):
        entries: list[tuple[YScalar, YNode]] = []
        for key_node, value_node in node.value:
            key = _convert(key_node, file, constructor, depth + 1, budget)
            if not isinstance(key, YScalar):
                raise YamlSyntaxError("mapping keys must be plain strings", key.loc)
            entries.append((key, _convert(value_node, file, constructor, depth + 1, budget)))
        return YMap(tuple(entries), loc)
    raise YamlSyntaxError(f"unsupported YAML node {type(node).__name__}", loc)


def type_name(node: YNode) -> str:
    """How a node's type is named in error messages."""
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a number"
    return "a string"
