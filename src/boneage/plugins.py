"""The plugin manager: built-in parts and third-party packages register through the same hooks.

Third-party plugins come from the entry-point group ``boneage`` and are loaded on first use,
not at ``import boneage``. A plugin that fails to load is recorded and reported by
``boneage plugins``; it does not stop the others.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Literal

import pluggy

from boneage import hookspecs
from boneage.errors import DuplicatePluginError, PluginError, PluginNotFoundError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "boneage"
DISABLE_AUTOLOAD_ENV = "BONEAGE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN = "built-in"

BUILTIN_MODULES = (
    "boneage.preprocess.builtin",
    "boneage.preprocess.crop_classical",
    "boneage.preprocess.crop_mediapipe",
    "boneage.backbones",
    "boneage.runtimes",
)

Kind = Literal["preprocess_steps", "croppers", "backbones", "runtimes"]
KINDS: tuple[Kind, ...] = ("preprocess_steps", "croppers", "backbones", "runtimes")


@dataclass(frozen=True)
class Registered:
    kind: Kind
    name: str
    spec: Any
    source: str
    plugin: str


@dataclass(frozen=True)
class LoadFailure:
    entry_point: str
    source: str
    error: str


class Plugins:
    """One plugin manager with its sources, load failures and the collected registries."""

    def __init__(self, autoload: bool = True) -> None:
        self.pm = pluggy.PluginManager("boneage")
        self.pm.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        self.failures: list[LoadFailure] = []
        self._registries: dict[Kind, dict[str, Registered]] = {}
        for module_name in BUILTIN_MODULES:
            self.register(importlib.import_module(module_name), BUILTIN, name=module_name)
        if autoload:
            self._load_entry_points()

    def register(self, plugin: object, source: str, name: str | None = None) -> None:
        plugin_name = self.pm.register(plugin, name=name)
        if plugin_name is not None:
            self.sources[plugin_name] = source
        self._registries.clear()

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            source = f"{dist.name} {dist.version}" if dist is not None else ep.value
            try:
                plugin = ep.load()
                self.register(plugin, source, name=f"{source}:{ep.name}")
            except Exception as exc:  # a broken plugin must not break the others
                log.warning("boneage plugin %r (%s) failed to load: %s", ep.name, source, exc)
                self.failures.append(LoadFailure(ep.name, source, f"{type(exc).__name__}: {exc}"))

    def registry(self, kind: Kind) -> dict[str, Registered]:
        if kind not in self._registries:
            self._registries[kind] = self._collect(kind)
        return self._registries[kind]

    def _collect(self, kind: Kind) -> dict[str, Registered]:
        found: dict[str, Registered] = {}
        hook = getattr(self.pm.hook, f"boneage_register_{kind}")
        for impl in hook.get_hookimpls():  # registration order
            source = self.sources.get(impl.plugin_name, impl.plugin_name)
            try:
                named = [(spec.name, spec) for spec in impl.function() or []]
            except Exception as exc:  # a third party's bug, reported with its source
                raise PluginError(f"plugin {impl.plugin_name} ({source}) failed in boneage_register_{kind}: {exc}") from exc
            for name, spec in named:
                if name in found:
                    first = found[name]
                    raise DuplicatePluginError(
                        f"{_label(kind)} {name!r} is registered twice: by {first.plugin} "
                        f"({first.source}) and by {impl.plugin_name} ({source})"
                    )
                found[name] = Registered(kind, name, spec, source, impl.plugin_name)
        return found

    def get(self, kind: Kind, name: str) -> Registered:
        items = self.registry(kind)
        if name not in items:
            known = ", ".join(sorted(items)) or "none"
            raise PluginNotFoundError(
                f"no {_label(kind)} named {name!r} (registered: {known})"
            )
        return items[name]


def _label(kind: Kind) -> str:
    return kind[:-1].replace("_", " ")


_plugins: Plugins | None = None
_lock = threading.Lock()


def get_plugins() -> Plugins:
    """The process-wide plugin manager, built on first use."""
    global _plugins
    with _lock:
        if _plugins is None:
            _plugins = Plugins(autoload=os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0"))
        return _plugins


def reset_plugins() -> None:
    """Forget the plugin manager so the next use rebuilds it (tests, plugin installs)."""
    global _plugins
    with _lock:
        _plugins = None


def get(kind: Kind, name: str) -> Any:
    """The spec registered under ``name``."""
    return get_plugins().get(kind, name).spec
