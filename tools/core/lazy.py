"""`lazy_import`: a module that loads on first use, so the server starts without numpy, pandas or scikit-learn.

The MCP server imports every tool module to read the tools' signatures; the data tools' modules name
numpy and pandas at the top like any scientific code, but bind them with `np = lazy_import("numpy")`,
which imports numpy the first time an attribute is read (the first data tool call), not at start-up.
The same idea as scientific-python's SPEC 1 (`lazy_loader`), without touching `sys.modules` early.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """Stands in for a module until an attribute is read; then imports it and forwards to it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_module"] = None

    def __getattr__(self, attr: str) -> Any:
        module = self.__dict__["_lazy_module"]
        if module is None:
            module = self.__dict__["_lazy_module"] = importlib.import_module(self.__name__)
        return getattr(module, attr)


def lazy_import(name: str) -> Any:
    """`np = lazy_import("numpy")`: numpy is imported when `np.<anything>` is first evaluated."""
    return LazyModule(name)
