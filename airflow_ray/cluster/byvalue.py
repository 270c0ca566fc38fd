"""Which modules travel to the cluster by value (as code), not by name.

Ray pickles functions and classes by reference to their module when it can, and a Ray worker
then imports that module. Two kinds of module cannot be imported there:

- :mod:`airflow_ray._remote`, the code that runs in the cluster, which a cluster without
  airflow-ray installed does not have;
- DAG files, modules beside them and test files, imported under names that only this process
  knows.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from functools import cache
from typing import Any

REMOTE_PACKAGE = "airflow_ray._remote"

# Modules already looked at, so that each task pays only for modules imported since the last.
_seen_modules: set[str] = set()


@cache
def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


def _outside_environment(module: Any) -> bool:
    """Whether a module was loaded from outside the interpreter's installed packages."""
    filename = getattr(module, "__file__", None)
    if not filename:
        return False
    return not os.path.realpath(filename).startswith(_installed_roots())


def register_by_value() -> None:
    """Make Ray ship :mod:`airflow_ray._remote` and every user module by value."""
    import importlib

    import ray.cloudpickle as cloudpickle

    importlib.import_module(REMOTE_PACKAGE)
    for name, module in list(sys.modules.items()):
        if name in _seen_modules or module is None:
            continue
        _seen_modules.add(name)
        if name == "__main__":
            continue
        # The whole package at once: cloudpickle then ships each of its submodules by value.
        registered = name == REMOTE_PACKAGE or (
            not name.startswith("airflow_ray") and _outside_environment(module)
        )
        if registered:
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:
                continue  # a module object not (or no longer) in sys.modules under its name
