"""Names of a package loaded on first use (PEP 562), for the packages `guard run` imports at every launch.

`lazy_names(package, where)` returns the `__getattr__` and `__dir__` a package's `__init__` assigns:
`where` maps each public name to the submodule that defines it, which is imported only when the name is
first read (and then cached in the package's globals)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

Getattr = Callable[[str], Any]


def lazy_names(package: str, where: Mapping[str, str]) -> tuple[Getattr, Callable[[], list[str]]]:
    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
