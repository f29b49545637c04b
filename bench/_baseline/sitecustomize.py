"""Python imports this at the start of every process of a benchmark's *baseline* stack: `bench._stack`
puts this folder on PYTHONPATH, with SMARTPLEX_BENCH_BUCKET_SECONDS set. When the gateway imports its
dispatcher, the dispatcher is made to plan with the earlier bucket rule (`bench._buckets`), so the product
packages carry no code for the baseline. Other processes (Prefect's server, the worker) never import the
dispatcher, and this does nothing in them.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

DISPATCHER_MODULE = "webhook_gateway.dispatch"


class _PatchedLoader(Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        from bench._buckets import use_buckets

        use_buckets(module.Dispatcher)


class _OnDispatcherImport(MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != DISPATCHER_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchedLoader(spec.loader)
        return spec


sys.meta_path.insert(0, _OnDispatcherImport())
