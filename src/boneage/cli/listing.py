"""``boneage plugins``, ``backbones`` and ``models``: what is registered, and from where."""

from __future__ import annotations

import argparse

from boneage.cli.table import format_table
from boneage.errors import printable
from boneage.models import load_registry, models_dir
from boneage.plugins import KINDS, describe_error, get_plugins
from boneage.prediction import readable
from boneage.specs import API_VERSION, BackboneSpec


def plugins(args: argparse.Namespace) -> int:
    """Every plugin with its version and the hooks it implements (as ``datasette plugins``), then
    every item and its source, then every plugin that failed or was refused (exit 1)."""
    manager = get_plugins()
    rows = [("plugin", "version", "api", "source", "hooks")]
    for info in manager.describe():
        hooks = ", ".join(hook.removeprefix("boneage_register_") for hook in info.hooks)
        rows.append((info.name, info.version or "-", info.api_version or "-", info.source, hooks))
    print(format_table(rows))
    print(f"\n(plugin API {API_VERSION}; hooks: boneage_register_<name>)\n")
    rows = [("kind", "name", "source", "plugin", "about")]
    for kind in KINDS:
        for item in manager.registry(kind).values():
            rows.append((kind, item.name, item.source, item.plugin, item.spec.doc))
    print(format_table(rows))
    problems = [f"failed to load: {f.entry_point} ({f.source}): {f.error}" for f in manager.failures]
    problems += [f"rejected: {r.plugin} ({r.source}): {r.error}" for r in manager.rejections]
    if problems:  # a plugin's names and messages are shown, never obeyed (escape sequences)
        print("\n" + "\n".join(printable(problem) for problem in problems))
    return 1 if problems else 0


def backbones(args: argparse.Namespace) -> int:
    """Each backbone with its parameter count; one whose build fails is listed, and exit is 1."""
    rows = [("name", "counted at (px)", "parameters", "source", "about")]
    problems = []
    for item in get_plugins().registry("backbones").values():
        spec = item.spec
        params, problem = _parameter_count(spec)
        if problem is not None:
            problems.append(f"backbone {item.name!r} ({item.source}) failed to build: {problem}")
        rows.append((item.name, str(spec.default_input_size), params, item.source, spec.doc))
    print(format_table(rows))
    if problems:
        print("\n" + "\n".join(printable(problem) for problem in problems))
    return 1 if problems else 0


def _parameter_count(spec: BackboneSpec) -> tuple[str, str | None]:
    """The count for the table, and what went wrong if a (perhaps third-party) build failed."""
    try:
        return f"{spec.build(spec.default_input_size).count_params():,}", None
    except ImportError:
        return "(needs boneage[train])", None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: one plugin's build must not end the listing
        return f"(failed: {type(exc).__name__})", describe_error(exc)


def models(args: argparse.Namespace) -> int:
    """The registered models in the models folder (``BONEAGE_MODELS_DIR`` or the packaged one), with
    the default and whether each is recommended; an empty folder is not an error. Metrics are numbers a float
    holds (checked with the registry); a huge one is shown in 3 significant digits, not 300."""
    directory = models_dir()
    registry = load_registry(directory)
    if not registry.models:
        print(f"no models registered in {printable(str(directory))}")
        return 0
    rows = [("model", "backbone", "file", "MB", "sha256", "val MAE", "default", "recommended")]
    for e in registry.models:
        mae = e.metrics.get("mae")
        rows.append((e.ref, e.backbone, e.file, f"{e.size / 1e6:.1f}", e.sha256[:12], readable(mae, ".2f") if mae is not None else "-",
                     "*" if e.ref == registry.default else "", "yes" if e.recommended else "no"))
    print(format_table(rows))
    print(f"\n({printable(str(directory))})")
    return 0
