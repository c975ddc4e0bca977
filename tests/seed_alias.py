"""Makes the seed's `providers.*` imports resolve to `promptq.providers.*`.

The repository keeps the design card's top-level `providers/` folder, and the
user's own tests import `providers.error_handling` from the checkout. Found
by the path finder, that folder would load a second copy of every module
under another name. This finder, placed before the path finder, hands back
the very module object `promptq.providers.X` is, so there is one class per
name in the process. `tasks` and `workers` are refused outright: promptq's own
code and tests use `promptq.*` alone, and a stray top-level import fails here
rather than creating a silent twin.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

ALIASED = "providers"
REFUSED = ("tasks", "workers")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        # Already executed under its real name; the import system only
        # records it under the alias too.
        pass


class SeedAliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        if top in REFUSED:
            raise ImportError(f"import promptq.{fullname}, not {fullname}: promptq's code has one import path")
        if top != ALIASED:
            return None
        real = "promptq." + fullname
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real), is_package=True)


def install_seed_alias() -> None:
    if not any(isinstance(f, SeedAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SeedAliasFinder())
