"""The plugin manager: built-in parts and third-party packages register through the same hooks.

Third-party plugins come from the entry-point group ``boneage`` and are loaded on first use,
not at ``import boneage``. A plugin is checked whole when it registers: its declared plugin API
version (``BONEAGE_API_VERSION``), its hooks (unknown, unmarked or wrapper hooks), and what they
return, called once then (a list of the right specs, made with keyword arguments, with names not
taken yet). One that fails any check is refused whole, with a message naming it: a
:class:`PluginError` from :meth:`Plugins.register`, or a rejection listed by ``boneage plugins``
for an installed plugin. One whose import fails (``sys.exit()`` included) is a load failure.
The built-ins and the other plugins keep working.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Literal

import pluggy

from boneage import hookspecs
from boneage._version import __version__
from boneage.containment import plugin_code
from boneage.errors import PluginError, PluginNotFoundError
from boneage.specs import (
    API_ATTRIBUTE,
    API_VERSION,
    BackboneSpec,
    CropperSpec,
    ReferenceSpec,
    RuntimeSpec,
    StepSpec,
    api_problem,
    spec_problem,
    type_name,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "boneage"
DISABLE_AUTOLOAD_ENV = "BONEAGE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN = "built-in"
HOOK_PREFIX = "boneage_"

BUILTIN_MODULES = (
    "boneage.preprocess.builtin",
    "boneage.preprocess.crop_classical",
    "boneage.preprocess.crop_mediapipe",
    "boneage.backbones",
    "boneage.runtimes",
    "boneage.references",
)

Kind = Literal["preprocess_steps", "croppers", "backbones", "runtimes", "references"]
KINDS: tuple[Kind, ...] = ("preprocess_steps", "croppers", "backbones", "runtimes", "references")
SPEC_TYPES: dict[Kind, type] = {
    "preprocess_steps": StepSpec, "croppers": CropperSpec, "backbones": BackboneSpec, "runtimes": RuntimeSpec,
    "references": ReferenceSpec,
}


@dataclass(frozen=True)
class Registered:
    """One item and the plugin that provided it (recorded in a model card at export)."""

    kind: Kind
    name: str
    spec: Any
    source: str
    plugin: str
    version: str = ""


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin as ``boneage plugins`` lists it (as ``datasette plugins`` does)."""

    name: str
    source: str
    version: str
    api_version: str | None
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class LoadFailure:
    """An installed plugin whose import failed; the others load."""

    entry_point: str
    source: str
    error: str


@dataclass(frozen=True)
class Rejection:
    """A plugin that was imported but refused whole, so none of its items half-work."""

    plugin: str
    source: str
    error: str


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one bounded line, even for an exception whose ``str`` fails."""
    try:
        text = " ".join(str(exc).split())
    except Exception:  # a plugin's exception may not even print
        text = "(unprintable)"
    name = type(exc).__name__
    return f"{name}: {text[:300]}" if text else name


def _refusal(exc: BaseException) -> str:
    """pluggy's refusals, shortened to one line (they append the whole plugin table)."""
    if isinstance(exc, ValueError) and str(exc):
        return str(exc).splitlines()[0]
    if isinstance(exc, pluggy.PluginValidationError):
        return " ".join(str(exc).split())[:300]
    return describe_error(exc)


def hook_name(kind: Kind) -> str:
    """Every hook is ``boneage_register_<kind>``: one naming rule, so a kind maps to its hook."""
    return f"boneage_register_{kind}"


class Plugins:
    """One plugin manager with its plugins' sources, versions and items, and its load failures and
    rejections. The built-ins register first; ``autoload`` also loads the installed entry points
    (group ``boneage``). Safe to share between threads: a lock guards registering and the registries."""

    def __init__(self, autoload: bool = True) -> None:
        """Register the built-ins now, through the same checks as any plugin; with ``autoload``, the
        installed entry points too (tests turn it off so installed packages cannot change results)."""
        self.pm = pluggy.PluginManager("boneage")
        self.pm.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.api_versions: dict[str, str | None] = {}
        self.failures: list[LoadFailure] = []
        self._refused: list[Rejection] = []
        self._items: dict[str, list[Registered]] = {}  # by plugin, in registration order
        self._registries: dict[Kind, dict[str, Registered]] = {}
        self._lock = threading.RLock()
        for module_name in BUILTIN_MODULES:
            self.register(importlib.import_module(module_name), BUILTIN, name=module_name, version=__version__)
        if autoload:
            self._load_entry_points()

    def register(self, plugin: object, source: str, name: str | None = None, version: str | None = None) -> None:
        """Add ``plugin``, checked whole now; one that cannot work is refused with a
        :class:`PluginError` naming it. ``version`` defaults to the plugin's ``__version__``."""
        name = name or _default_name(plugin)
        problem = self._register(plugin, source, name, _version_of(plugin) if version is None else version)
        if problem is not None:
            raise PluginError(f"plugin {name} ({source}): {problem}")

    def _register(self, plugin: object, source: str, name: str, version: str) -> str | None:
        """Register, or leave nothing behind and say why not."""
        with self._lock, plugin_code():  # getattr and the hooks run the plugin's code: its print() is contained
            plugin_name: str | None = None
            api: Any = None
            items: list[Registered] = []
            try:
                api = getattr(plugin, API_ATTRIBUTE, None)
                problem = api_problem(api)
                if problem is None:
                    plugin_name = self.pm.register(plugin, name=name)
                    problem = None if plugin_name is None else _hook_problem(self.pm, plugin)
                if problem is None and plugin_name is not None:
                    items = self._items_of(plugin, plugin_name, source, version)
            except KeyboardInterrupt:
                if plugin_name is not None:
                    self.pm.unregister(name=plugin_name)
                raise
            except PluginError as exc:  # one of its hooks failed, returned garbage or took a name
                problem = str(exc)
            except BaseException as exc:  # pluggy's refusals, or plugin code run by getattr
                problem = _refusal(exc)
            if problem is not None:
                if plugin_name is not None:
                    self.pm.unregister(name=plugin_name)
                return problem
            if plugin_name is not None:  # None: blocked on purpose
                self.sources[plugin_name] = source
                self.versions[plugin_name] = version
                self.api_versions[plugin_name] = API_VERSION if api is None and source == BUILTIN else api
                self._items[plugin_name] = items
                self._registries.clear()
            return None

    def _items_of(self, plugin: object, plugin_name: str, source: str, version: str) -> list[Registered]:
        """All of one plugin's items, its hooks called once, or a PluginError saying why the plugin
        is refused. Names are first come, first served: built-ins register first."""
        items: list[Registered] = []
        for kind in KINDS:
            for impl in getattr(self.pm.hook, hook_name(kind)).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                for spec in _call_hook(kind, impl):
                    item = Registered(kind, spec.name, spec, source, plugin_name, version)
                    first = self._find(kind, item.name) or next(
                        (i for i in items if (i.kind, i.name) == (kind, item.name)), None)
                    if first is not None:
                        raise PluginError(f"{_label(kind)} {item.name!r} is registered twice: by {first.plugin} "
                                          f"({first.source}) and by {plugin_name} ({source})")
                    items.append(item)
        return items

    def _find(self, kind: Kind, name: str) -> Registered | None:
        return next((i for items in self._items.values() for i in items if (i.kind, i.name) == (kind, name)), None)

    def _load_entry_points(self) -> None:
        try:
            points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        except Exception as exc:  # a broken distribution's metadata
            self._fail(LoadFailure("(entry points)", "importlib.metadata", describe_error(exc)))
            return
        for ep in points:
            self._load(ep)

    def _load(self, ep: Any) -> None:
        dist = getattr(ep, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else ep.value
        try:
            with plugin_code():  # its import: a print() there reached --json's output (thirteenth probe)
                plugin = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end the caller
            self._fail(LoadFailure(ep.name, source, describe_error(exc)))
            return
        if self.pm.is_registered(plugin):  # a second entry point to the same module
            return
        name = f"{source}:{ep.name}"
        version = str(dist.version) if dist is not None else _version_of(plugin)
        problem = self._register(plugin, source, name, version)
        if problem is not None:
            rejection = Rejection(name, source, problem)
            log.warning("boneage plugin %s (%s) refused: %s", rejection.plugin, rejection.source, rejection.error)
            self._refused.append(rejection)

    def _fail(self, failure: LoadFailure) -> None:
        log.warning("boneage plugin %r (%s) failed to load: %s", failure.entry_point, failure.source, failure.error)
        self.failures.append(failure)

    @property
    def rejections(self) -> list[Rejection]:
        """Installed plugins refused when they registered."""
        with self._lock:
            return list(self._refused)

    def registry(self, kind: Kind) -> dict[str, Registered]:
        """Every item of one kind by name, built once after a change; do not mutate the dict returned."""
        with self._lock:
            if not self._registries:
                found: dict[Kind, dict[str, Registered]] = {k: {} for k in KINDS}
                for items in self._items.values():
                    for item in items:
                        found[item.kind][item.name] = item
                self._registries = found
            return self._registries[kind]

    def describe(self) -> list[PluginInfo]:
        """Every registered plugin, in registration order, with the hooks it implements."""
        with self._lock:
            infos = []
            for name, source in self.sources.items():
                plugin = self.pm.get_plugin(name)
                hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or []))
                infos.append(PluginInfo(name, source, self.versions.get(name, ""), self.api_versions.get(name), hooks))
            return infos

    def get(self, kind: Kind, name: str) -> Registered:
        """Raises :class:`PluginNotFoundError` naming what is registered, and how many plugins failed."""
        items = self.registry(kind)
        if name not in items:
            known = ", ".join(sorted(items)) or "none"
            raise PluginNotFoundError(f"no {_label(kind)} named {name!r} (registered: {known}{self._refused_note()})")
        return items[name]

    def _refused_note(self) -> str:
        count = len(self.failures) + len(self.rejections)
        if not count:
            return ""
        return f"; {count} plugin{'' if count == 1 else 's'} failed to load or {'was' if count == 1 else 'were'} " \
               "refused, see `boneage plugins`"


def _call_hook(kind: Kind, impl: Any) -> list[Any]:
    """A hook's specs, checked; whatever it raises or returns wrong becomes a PluginError."""
    hook = hook_name(kind)
    try:
        value = impl.function()
        problem = _return_problem(value, SPEC_TYPES[kind])
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a plugin must not end the caller
        raise PluginError(f"{hook} raised {describe_error(exc)}{_positional_hint(exc)}") from exc
    if problem is not None:
        raise PluginError(f"{hook}: {problem}")
    return list(value or [])


def _positional_hint(exc: BaseException) -> str:
    """Specs take keywords only: say so when a plugin made one positionally."""
    text = str(exc) if isinstance(exc, TypeError) else ""
    spec = next((t.__name__ for t in SPEC_TYPES.values() if text.startswith(f"{t.__name__}.__init__()")), None)
    if spec is None or "positional" not in text:
        return ""
    return f" (specs take keyword arguments only: {spec}(name=..., ...), see docs/plugins.md)"


def _return_problem(value: object, expected: type) -> str | None:
    if value is None:  # a hook that contributes nothing
        return None
    if not isinstance(value, (list, tuple)):
        return f"returned {type_name(value)}, not a list of {expected.__name__}"
    for index, spec in enumerate(value):
        problem = spec_problem(spec, expected)
        if problem is not None:
            return f"item {index} is {problem}" if not isinstance(spec, expected) else f"item {index}: {problem}"
    return None


def _hook_problem(pm: pluggy.PluginManager, plugin: object) -> str | None:
    """Why a just-registered plugin's hooks cannot work: pluggy accepts all of these silently."""
    callers = pm.get_hookcallers(plugin) or []
    known = _known_hooks()
    for caller in callers:
        impls = [impl for impl in caller.get_hookimpls() if impl.plugin is plugin]
        if not caller.has_spec() and any(not impl.optionalhook for impl in impls):
            close = difflib.get_close_matches(caller.name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"boneage's hooks: {', '.join(known)}"
            return f"unknown hook {caller.name!r} ({hint})"
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            return f"{caller.name}: hook wrappers are not supported"
    unmarked = _unmarked_hooks(pm, plugin, known)
    if unmarked:
        return f"{', '.join(unmarked)} is not marked with @boneage.hookimpl"
    if not callers:
        return "implements no boneage hook (mark hook functions with @boneage.hookimpl)"
    return None


def _known_hooks() -> list[str]:
    return sorted(name for name in dir(hookspecs) if name.startswith(HOOK_PREFIX))


def _unmarked_hooks(pm: pluggy.PluginManager, plugin: object, known: list[str]) -> list[str]:
    """Functions named like a hook (or nearly) but not marked, which pluggy would skip."""
    names = []
    for name in dir(plugin):
        if name.startswith(HOOK_PREFIX) and difflib.get_close_matches(name, known, n=1, cutoff=0.8) \
                and inspect.isroutine(getattr(plugin, name, None)) and pm.parse_hookimpl_opts(plugin, name) is None:
            names.append(name)
    return names


def _version_of(plugin: object) -> str:
    """A plugin object's or module's ``__version__``, or ""."""
    try:
        version = getattr(plugin, "__version__", "")
    except Exception:  # plugin code run by getattr
        return ""
    return version if isinstance(version, str) else ""


def _default_name(plugin: object) -> str:
    """A module's name, or an object's class name, as pluggy would otherwise use its id."""
    name = getattr(plugin, "__name__", None)
    return name if isinstance(name, str) else type(plugin).__name__


def _label(kind: Kind) -> str:
    return kind[:-1].replace("_", " ")


_plugins: Plugins | None = None
_lock = threading.Lock()


def get_plugins(given: Plugins | None = None) -> Plugins:
    """``given`` where a caller passed its own manager (tests, an application's own plugin set),
    else the process-wide one, built on first use."""
    if given is not None:
        return given
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
