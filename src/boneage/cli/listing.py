"""``boneage plugins``, ``backbones`` and ``models``: what is registered, and from where."""

from __future__ import annotations

import argparse

from boneage.cli.table import format_table
from boneage.models import load_registry, models_dir
from boneage.plugins import KINDS, get_plugins


def plugins(args: argparse.Namespace) -> int:
    manager = get_plugins()
    rows = [("kind", "name", "source", "plugin", "about")]
    for kind in KINDS:
        for item in manager.registry(kind).values():
            rows.append((kind, item.name, item.source, item.plugin, item.spec.doc))
    print(format_table(rows))
    for failure in manager.failures:
        print(f"\nfailed to load: {failure.entry_point} ({failure.source}): {failure.error}")
    return 1 if manager.failures else 0


def backbones(args: argparse.Namespace) -> int:
    rows = [("name", "counted at (px)", "parameters", "source", "about")]
    for item in get_plugins().registry("backbones").values():
        spec = item.spec
        try:
            params = f"{spec.build(spec.default_input_size).count_params():,}"
        except ImportError:
            params = "(needs boneage[train])"
        rows.append((item.name, str(spec.default_input_size), params, item.source, spec.doc))
    print(format_table(rows))
    return 0


def models(args: argparse.Namespace) -> int:
    directory = models_dir()
    registry = load_registry(directory)
    if not registry.models:
        print(f"no models registered in {directory}")
        return 0
    rows = [("model", "backbone", "file", "MB", "sha256", "val MAE", "default", "recommended")]
    for e in registry.models:
        mae = e.metrics.get("mae")
        rows.append((e.ref, e.backbone, e.file, f"{e.size / 1e6:.1f}", e.sha256[:12], f"{mae:.2f}" if mae is not None else "-",
                     "*" if e.ref == registry.default else "", "yes" if e.recommended else "no"))
    print(format_table(rows))
    print(f"\n({directory})")
    return 0
