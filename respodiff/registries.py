"""The one rule the suite's registries (methods, benchmarks, attacks) share for adding a class under a name."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from .errors import ConfigError


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def add_to_registry(registry: dict[str, type], name: str, cls: type, what: str) -> type:
    """Put `cls` under `name`. The same class seen again (its module re-imported, e.g. by importlib.reload) is not a
    conflict; two different classes under one name are, since which one ran would depend on import order."""
    existing = registry.get(name)
    if existing is not None and qualified_name(existing) != qualified_name(cls):
        raise ConfigError(f"{what} {name!r} is registered twice: by {qualified_name(existing)} and by "
                          f"{qualified_name(cls)}")
    registry[name] = cls
    return cls


def import_submodules(package: ModuleType, skip: frozenset[str] | set[str]) -> None:
    """Import every module of `package` but those in `skip`, so the classes they register are known."""
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in skip:
            importlib.import_module(f"{package.__name__}.{info.name}")
