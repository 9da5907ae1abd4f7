"""Find the bundles and run their configs: the one path every entry point (CLI, tests, bench) takes."""

from __future__ import annotations

import ast
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow

from neurobundles.errors import WeightsUnavailableError

__all__ = [
    "bundle_names",
    "bundle_parser",
    "bundle_path",
    "bundle_root",
    "bundles_dir",
    "config_files",
    "create_workflow",
    "label_names",
    "load_metadata",
    "load_network",
    "run_workflow",
    "trained_checkpoint",
]

BUNDLES_ENV = "NEUROBUNDLES_BUNDLES"
_REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def bundles_dir() -> Path:
    """``NEUROBUNDLES_BUNDLES``, else the ``bundles/`` folder of the source checkout."""
    return Path(os.environ.get(BUNDLES_ENV) or _REPO_BUNDLES).expanduser()


def bundle_names() -> list[str]:
    root = bundles_dir()
    return (
        sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file()) if root.is_dir() else []
    )


def bundle_path(name: str | Path) -> Path:
    """A bundle folder by name (in :func:`bundles_dir`) or by path."""
    candidate = Path(name).expanduser()
    if (candidate / "configs" / "metadata.json").is_file():
        return candidate.resolve()
    found = bundles_dir() / str(name)
    if (found / "configs" / "metadata.json").is_file():
        return found.resolve()
    raise FileNotFoundError(
        f"unknown bundle {str(name)!r}; available in {bundles_dir()}: {', '.join(bundle_names()) or 'none'}."
    )


def _config_file_from_argv(argv: Sequence[str]) -> Path | None:
    for index, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--config_file=") else None
        if arg == "--config_file" and index + 1 < len(argv):
            value = argv[index + 1]
        if value:
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                parsed = value
            first = parsed[0] if isinstance(parsed, (list, tuple)) else parsed
            return Path(str(first))
    return None


def bundle_root(name: str) -> str:
    """Folder of the bundle whose config is being run, for ``"bundle_root"`` in its configs.

    MONAI does not tell a config where it lives, so this looks, in order, at the ``--config_file``
    given to ``python -m monai.bundle``, at the working directory (the Model Zoo convention of
    running from inside the bundle), and at the installed bundle called ``name``. Override with
    ``--bundle_root`` to choose explicitly.
    """
    config_file = _config_file_from_argv(sys.argv)
    if config_file is not None and (config_file.parent / "metadata.json").is_file():
        return str(config_file.parent.parent.resolve())
    if (Path.cwd() / "configs" / "metadata.json").is_file():
        return str(Path.cwd())
    return str(bundle_path(name))


def trained_checkpoint(bundle_root: str | Path, path: str | Path = "models/model.pt") -> str:
    """The weights a bundle's ``train.json`` wrote (``path``, relative to ``bundle_root`` unless absolute).

    Bundles that publish no weights run only once trained; this is where their configs find the weights,
    and it says how to get them when they are missing.
    """
    root = Path(bundle_root)
    checkpoint = Path(path) if Path(path).is_absolute() else root / path
    if not checkpoint.is_file():
        raise WeightsUnavailableError(
            f"{checkpoint}: no trained weights; {root.name} publishes none. Train first: "
            f"python -m monai.bundle run --config_file {root / 'configs' / 'train.json'} --dataset_dir /path/to/data "
            "(or pass --ckpt_path to weights you trained elsewhere)."
        )
    return str(checkpoint)


def load_metadata(name: str | Path) -> dict[str, Any]:
    return json.loads((bundle_path(name) / "configs" / "metadata.json").read_text())


def label_names(name: str | Path) -> dict[str, str]:
    """The prediction's ``channel_def`` from a bundle's metadata: label value → name.

    Configs call this instead of referencing ``@_meta_#...``, because MONAI Label parses a bundle's
    ``inference.json`` without its metadata.
    """
    return dict(load_metadata(name)["network_data_format"]["outputs"]["pred"]["channel_def"])


def bundle_parser(name: str | Path, config: str = "inference", **override: Any) -> ConfigParser:
    """A parser of one bundle config with its metadata, ``bundle_root`` set to the bundle (no argv guessing)."""
    root = bundle_path(name)
    parser = ConfigParser()
    parser.read_config(config_files(root, config)[0])
    parser.read_meta(str(root / "configs" / "metadata.json"))
    parser["bundle_root"] = str(root)
    for key, value in override.items():
        parser[key] = value
    return parser


def config_files(name: str | Path, config: str | Sequence[str] = "inference") -> list[str]:
    """Config file paths of a bundle; several are layered in order (``["inference", "evaluate"]``)."""
    root = bundle_path(name)
    names = [config] if isinstance(config, str) else list(config)
    files = [root / "configs" / f"{n}.json" for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"bundle {root.name} has no config {', '.join(missing)}.")
    return [str(f) for f in files]


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


def load_network(name: str | Path, device: str | Any = "cpu") -> Any:
    """A bundle's ``network`` with its weights, e.g. the brain-extraction network for another bundle's crop step."""
    parser = bundle_parser(name, device=f"$torch.device({str(device)!r})")
    return parser.get_parsed_content("network").eval()


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
