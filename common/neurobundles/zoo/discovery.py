"""Find bundles by name and run their configs: the one path the command line, tools and tests take.

Bundle configs never depend on this module: they locate themselves (:mod:`neurobundles.zoo.config`), so a
bundle copied anywhere runs without it. This is what ``neurobundles segment --bundle NAME`` uses to turn a
name into a folder (``NEUROBUNDLES_BUNDLES``, else the checkout's ``bundles/``) and to build MONAI's
``ConfigWorkflow`` exactly as ``python -m monai.bundle run`` does.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow

from neurobundles.paths import BUNDLES_ENV, bundles_dir

__all__ = [
    "UnknownBundleError",
    "bundle_names",
    "bundle_parser",
    "bundle_path",
    "config_files",
    "create_workflow",
    "is_bundle",
    "load_metadata",
    "run_workflow",
    "run_workflow_processes",
]


class UnknownBundleError(FileNotFoundError):
    """A bundle name or folder that is not a bundle; the message lists the bundles that exist."""


def is_bundle(folder: str | Path) -> bool:
    """A MONAI bundle folder: ``configs/metadata.json`` inside."""
    return (Path(folder) / "configs" / "metadata.json").is_file()


def bundle_names() -> list[str]:
    """Names of the bundles in :func:`neurobundles.paths.bundles_dir`, sorted."""
    root = bundles_dir()
    if root is None or not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if is_bundle(p))


def bundle_path(name: str | Path) -> Path:
    """A bundle folder by name (in :func:`neurobundles.paths.bundles_dir`) or by path."""
    candidate = Path(name).expanduser()
    if is_bundle(candidate):
        return candidate.resolve()
    root = bundles_dir()
    if root is not None and is_bundle(root / str(name)):
        return (root / str(name)).resolve()
    if candidate.is_dir():
        raise UnknownBundleError(f"{candidate}: is not a bundle folder (no configs/metadata.json inside).")
    where = f"in {root}" if root is not None else f"(set {BUNDLES_ENV} to a folder of bundles)"
    raise UnknownBundleError(
        f"unknown bundle {str(name)!r}; bundles {where}: {', '.join(bundle_names()) or 'none'}. "
        "Pass a bundle name from `neurobundles list` or the path of a bundle folder."
    )


def load_metadata(name: str | Path) -> dict[str, Any]:
    return json.loads((bundle_path(name) / "configs" / "metadata.json").read_text())


def config_files(name: str | Path, config: str | Sequence[str] = "inference") -> list[str]:
    """Config file paths of a bundle; several are layered in order (``["inference", "evaluate"]``)."""
    root = bundle_path(name)
    names = [config] if isinstance(config, str) else list(config)
    files = [root / "configs" / f"{n}.json" for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"bundle {root.name} has no config {', '.join(missing)}.")
    return [str(f) for f in files]


def bundle_parser(name: str | Path, config: str | Sequence[str] = "inference", **override: Any) -> ConfigParser:
    """A parser of a bundle's configs with its metadata and ``bundle_root`` set to the bundle folder."""
    root = bundle_path(name)
    parser = ConfigParser()
    parser.read_config(config_files(root, config))
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    for key, value in override.items():
        parser[key] = value
    return parser


def create_workflow(
    name: str | Path, config: str | Sequence[str] = "inference", workflow_type: str = "infer", **override: Any
) -> ConfigWorkflow:
    """A MONAI :class:`~monai.bundle.ConfigWorkflow` for a bundle, exactly as ``monai.bundle run`` builds it."""
    root = bundle_path(name)
    override.setdefault("bundle_root", str(root))
    return ConfigWorkflow(
        config_file=config_files(root, config),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf") if (root / "configs" / "logging.conf").is_file() else False,
        workflow_type=workflow_type,
        **override,
    )


def run_workflow(
    name: str | Path, config: str | Sequence[str] = "inference", workflow_type: str = "infer", **override: Any
) -> ConfigWorkflow:
    """Initialise, run and finalise a bundle config; returns the workflow for inspecting its state."""
    workflow = create_workflow(name, config, workflow_type, **override)
    workflow.initialize()
    try:
        workflow.run()
    finally:
        workflow.finalize()
    return workflow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _process(rank: int, world_size: int, port: int, name: str, config: list[str], override: dict[str, Any]) -> None:
    """One process of :func:`run_workflow_processes`: the environment ``torchrun`` would give it, then the run."""
    import torch

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))  # the processes share this machine's cores
    run_workflow(name, config, **override)


def run_workflow_processes(name: str | Path, config: Sequence[str], nproc: int, **override: Any) -> None:
    """Run a bundle config in ``nproc`` processes on this machine, as ``torchrun --nproc_per_node`` would.

    ``config`` layers a ``multi_gpu_*`` config that joins the process group; an error in any process is raised
    here once all have ended.
    """
    import torch.multiprocessing as mp

    args = (nproc, _free_port(), str(bundle_path(name)), list(config), override)
    mp.start_processes(_process, args=args, nprocs=nproc, join=True, start_method="spawn")
