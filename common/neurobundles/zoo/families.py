"""One source per config family: each bundle's configs are generated from its family's templates.

Bundles of one kind (the pretrained HCP MeshNets; the MeshNet/U-Net trained on sub-volumes; each new model
family) share all but a few config values. MONAI can layer config files (``--config_file "[a, b]"``), but
MONAI Label, the Model Zoo's CI and a user's ``--config_file configs/inference.json`` read one file, so every
bundle ships flat configs. They are generated from ``bundles/_families/<family>/`` and the bundle's own
``family.json``, and ``python -m neurobundles.zoo.families --check`` (a test) fails when a generated file
drifts from its sources. Edit the templates or ``family.json``, then regenerate::

    python -m neurobundles.zoo.families            # rewrite every bundle's generated files
    python -m neurobundles.zoo.families --check    # list drifted files; exit 1 if any

A family folder holds ``base.json`` (ids shared by ``inference.json`` and ``train.json``, so that
``evaluate.json`` can be layered over either) and one template per config. ``family.json``::

    {"family": "meshnet_hcp",
     "configs": ["inference", "evaluate", "train"],       # the configs this bundle ships
     "set": {"network_def#channels": 5},                  # MONAI ids, set in every config holding the id
                                                          # (for nested ids: holding its parent)
     "set_evaluate": {"label_file": "brainmask.mgz"},     # ids for one config only
     "remove": ["brain_crop_inferer"]}                    # ids this bundle leaves out

Versions in ``metadata.json`` (MONAI, PyTorch, NumPy, required packages, this package) come from the
checkout's ``requirements.txt`` and ``neurobundles.__version__``, and are rewritten with the configs.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire
from monai.bundle import ConfigParser

from neurobundles.atomic import atomic_write_text
from neurobundles.paths import checkout_root

__all__ = ["FAMILY_FILE", "check", "generate", "main", "pinned_versions", "render"]

FAMILY_FILE = "family.json"
FAMILIES = "_families"
BASED = ("inference", "train")
"""Configs built on the family's ``base.json``; the others (``evaluate``, ``multi_gpu_*``) are layered over them."""


def _checkout() -> Path:
    root = checkout_root()
    if root is None:
        raise FileNotFoundError("config families live in the source checkout (bundles/_families); run from one.")
    return root


def pinned_versions(requirements: str | Path | None = None) -> dict[str, str]:
    """Package → version of every ``name==version`` line of ``requirements.txt`` (names lower-case)."""
    path = Path(requirements) if requirements else _checkout() / "requirements.txt"
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s#;]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error


def _template(family: Path, config: str) -> dict[str, Any]:
    path = family / f"{config}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: family {family.name} has no {config} template.")
    content = _load(family / "base.json") if config in BASED else {}
    content.update(_load(path))
    return content


def _has(parser: ConfigParser, config_id: str) -> bool:
    try:
        parser[config_id]
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return True


def _apply(configs: dict[str, dict], spec: dict[str, Any], source: Path) -> None:
    parsers = {name: ConfigParser(config=content) for name, content in configs.items()}
    for config_id, value in spec.get("set", {}).items():
        parent = config_id.rsplit("#", 1)[0] if "#" in config_id else None
        targets = [name for name, parser in parsers.items() if _has(parser, parent or config_id)]
        if not targets:
            raise KeyError(f"{source}: set {config_id!r} matches no id in {', '.join(parsers)}.")
        for name in targets:
            parsers[name][config_id] = copy.deepcopy(value)
    for name, parser in parsers.items():
        for config_id, value in spec.get(f"set_{name}", {}).items():
            parent = config_id.rsplit("#", 1)[0] if "#" in config_id else ""
            if parent and not _has(parser, parent):
                raise KeyError(f"{source}: set_{name} {config_id!r}: {parent!r} is not in {name}.json.")
            parser[config_id] = copy.deepcopy(value)
    for config_id in spec.get("remove", []):
        found = [name for name, parser in parsers.items() if config_id in parser.get()]
        if not found:
            raise KeyError(f"{source}: remove {config_id!r} matches no top-level id.")
        for name in found:
            del parsers[name].get()[config_id]
    for name, parser in parsers.items():
        configs[name] = parser.get()


def _metadata(bundle: Path, pins: dict[str, str]) -> dict[str, Any]:
    from neurobundles import __version__

    path = bundle / "configs" / "metadata.json"
    metadata = _load(path)
    metadata["monai_version"] = pins["monai"]
    metadata["pytorch_version"] = pins["torch"]
    metadata["numpy_version"] = pins["numpy"]
    packages = {}
    for name in metadata.get("required_packages_version", {}):
        if name == "neurobundles":
            packages[name] = __version__
        elif name.lower() in pins:
            packages[name] = pins[name.lower()]
        else:
            raise KeyError(f"{path}: required package {name!r} is not pinned in requirements.txt; pin it there.")
    metadata["required_packages_version"] = packages
    return metadata


def render(bundle: str | Path) -> dict[str, str]:
    """Generated file (relative to the bundle) → its text, for a bundle folder holding ``family.json``."""
    bundle = Path(bundle)
    spec_file = bundle / FAMILY_FILE
    spec = _load(spec_file)
    family = _checkout() / "bundles" / FAMILIES / spec["family"]
    if not family.is_dir():
        raise FileNotFoundError(f"{spec_file}: no family folder {family}.")
    configs = {name: _template(family, name) for name in spec["configs"]}
    _apply(configs, spec, spec_file)
    files = {f"configs/{name}.json": configs[name] for name in spec["configs"]}
    files["configs/metadata.json"] = _metadata(bundle, pinned_versions())
    return {path: json.dumps(content, indent=4, ensure_ascii=False) + "\n" for path, content in files.items()}


def _family_bundles(names: Sequence[str]) -> list[Path]:
    bundles = _checkout() / "bundles"
    found = sorted(p for p in bundles.iterdir() if (p / FAMILY_FILE).is_file())
    if names:
        found = [p for p in found if p.name in names]
        missing = sorted(set(names) - {p.name for p in found})
        if missing:
            raise FileNotFoundError(f"no {FAMILY_FILE} in bundle(s) {', '.join(missing)}.")
    return found


def _drifted(names: Sequence[str]) -> list[tuple[Path, str, str]]:
    """(path, bundle-relative name, generated text) of every generated file that differs from what is on disk."""
    drifted = []
    for bundle in _family_bundles(names):
        for relative, text in render(bundle).items():
            path = bundle / relative
            if not path.is_file() or path.read_text() != text:
                drifted.append((path, f"{bundle.name}/{relative}", text))
    return drifted


def check(names: Sequence[str] = ()) -> list[str]:
    """Generated files that differ from what their family and ``family.json`` give (bundle-relative paths)."""
    return [name for _, name, _ in _drifted(names)]


def generate(names: Sequence[str] = ()) -> list[str]:
    """Rewrite the generated files that changed; returns them."""
    drifted = _drifted(names)
    for path, _, text in drifted:
        atomic_write_text(path, text)
    return [name for _, name, _ in drifted]


def main(*names: str, check_only: bool = False) -> int:
    """Regenerate bundle configs from their families (``--check_only``: only report drift, exit 1 if any)."""
    changed = check(names) if check_only else generate(names)
    for path in changed:
        print(("drifted: " if check_only else "wrote: ") + path)
    return 1 if check_only and changed else 0


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.argv[sys.argv.index("--check")] = "--check_only"
    sys.exit(fire.Fire(main))
