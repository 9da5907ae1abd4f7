"""What bundle configs call while they are parsed and initialised: where the bundle is, its labels and weights.

Every bundle sets ``"bundle_root": "$neurobundles.zoo.bundle_root()"``: the folder of the config being run,
wherever the bundle was copied, unzipped or downloaded to, and whatever the working directory is. MONAI's
``ConfigWorkflow`` (behind ``python -m monai.bundle run``, ``monai.bundle.run()`` and this package's
commands) knows which files it read; :func:`bundle_root` asks it. Callers that know the folder (MONAI Label,
``--bundle_root``) set ``bundle_root`` themselves, which replaces the expression.

Nothing here downloads while a config is parsed: weights are named with
:func:`~neurobundles.zoo.hub.large_file` and fetched by :func:`load_bundle_weights` in ``initialize``.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from torch import nn

from neurobundles.errors import WeightsUnavailableError, reported
from neurobundles.networks import load_pretrained

from .discovery import UnknownBundleError, bundle_path, is_bundle
from .hub import fetch_large_files

__all__ = [
    "bundle_root",
    "label_names",
    "load_bundle_weights",
    "load_network",
    "measured_paths",
    "sibling_bundle",
    "trained_checkpoint",
]


def _bundle_of(config_file: str | Path) -> Path | None:
    """The bundle folder a config file belongs to (``<bundle>/configs/<name>.json``), if it is one."""
    configs = Path(config_file).expanduser().resolve().parent
    root = configs.parent if configs.name == "configs" else configs
    return root if is_bundle(root) else None


def _first_file(value: Any) -> str | None:
    """The first path of a ``config_file`` argument: a path, a list of paths, or a string holding a list."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return _first_file(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            return None
    return str(value) if isinstance(value, (str, Path)) else None


def _config_files_on_stack() -> Iterator[str]:
    """Config files of the MONAI bundle machinery running this parse, innermost first.

    A :class:`~monai.bundle.ConfigWorkflow` records the folder of its configs (``config_root_path``);
    ``monai.bundle``'s script functions (``verify_net_in_out``, ``ckpt_export``...) hold theirs in a
    ``config_file`` argument.
    """
    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ConfigWorkflow):
            yield str(Path(owner.config_root_path) / "metadata.json")
        if frame.f_globals.get("__name__", "").startswith("monai.bundle"):
            for name in ("config_file_", "config_file"):
                found = _first_file(frame.f_locals.get(name))
                if found:
                    yield found
        frame = frame.f_back


def _config_file_in_argv() -> str | None:
    for index, arg in enumerate(sys.argv):
        if arg.startswith("--config_file="):
            return _first_file(arg.split("=", 1)[1])
        if arg == "--config_file" and index + 1 < len(sys.argv):
            return _first_file(sys.argv[index + 1])
    return None


@reported
def bundle_root() -> str:
    """Folder of the bundle whose config is being parsed (``"bundle_root"`` in every config).

    In order: the config files of the MONAI workflow or ``monai.bundle`` command on the call stack, the
    ``--config_file`` on the command line, and the working directory when it is a bundle (the Model Zoo
    convention). Pass ``--bundle_root`` (or ``bundle_root=`` in Python) to choose explicitly.
    """
    for config_file in [*_config_files_on_stack(), _config_file_in_argv()]:
        root = _bundle_of(config_file) if config_file else None
        if root is not None:
            return str(root)
    if is_bundle(Path.cwd()):
        return str(Path.cwd())
    raise ValueError(
        "cannot tell which bundle this config belongs to: it was not read by a MONAI ConfigWorkflow from a "
        "<bundle>/configs folder, and the working directory is not a bundle. Pass --bundle_root /path/to/bundle."
    )


def label_names(bundle_root: str | Path) -> dict[str, str]:
    """The prediction's ``channel_def`` from a bundle's metadata: label value → name.

    Configs call this instead of referencing ``@_meta_#...``, because MONAI Label parses a bundle's
    ``inference.json`` without its metadata.
    """
    metadata = json.loads((Path(bundle_root) / "configs" / "metadata.json").read_text())
    return dict(metadata["network_data_format"]["outputs"]["pred"]["channel_def"])


@reported
def sibling_bundle(bundle_root: str | Path, name: str) -> str:
    """Another bundle a config uses (``--brain_crop`` uses ``meshnet_hcp_brainmask``), found without fetching.

    The folder ``name`` beside ``bundle_root`` (where ``monai.bundle download --bundle_dir`` and the checkout
    put bundles), else the bundle of that name in ``NEUROBUNDLES_BUNDLES``. Override the config id that
    holds it (e.g. ``--brainmask_bundle /path``) to use any other copy.
    """
    beside = Path(bundle_root).resolve().parent / name
    if is_bundle(beside):
        return str(beside)
    try:
        return str(bundle_path(name))
    except UnknownBundleError as error:
        raise UnknownBundleError(
            f"bundle {name!r} is needed beside {bundle_root} but was not found ({beside} is not a bundle). "
            f"Download it there (python -m monai.bundle download --name {name} --bundle_dir {beside.parent}) "
            "or pass the path of a copy (e.g. --brainmask_bundle /path/to/bundle)."
        ) from error


@reported
def measured_paths(bundle: str | Path) -> dict[str, dict[str, float]]:
    """The faster CPU paths measured for ``bundle`` (its ``inference.json`` ``measured_paths``), e.g. for the
    brain-extraction network that ``--brain_crop`` runs inside another bundle."""
    config = json.loads((Path(bundle) / "configs" / "inference.json").read_text())
    return dict(config.get("measured_paths", {}))


@reported
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


@reported
def load_bundle_weights(network: nn.Module, ckpt_path: str | Path, bundle_root: str | Path) -> nn.Module:
    """Fetch the bundle's listed files (hash-checked) and load ``ckpt_path`` into ``network`` in place.

    The ``initialize`` step of the configs: weights may be a brainchop file or this package's checkpoint.
    """
    fetch_large_files(bundle_root)
    return load_pretrained(network, ckpt_path)


@reported
def load_network(bundle: str | Path, device: str | torch.device = "cpu", config: str = "inference") -> nn.Module:
    """A bundle's ``network_def`` with its weights, in eval mode on ``device``.

    For another bundle's config (the brain-extraction network of ``--brain_crop``) and for tools; a bundle
    folder or a known bundle name.
    """
    root = bundle_path(bundle)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / f"{config}.json"))
    parser["bundle_root"] = str(root)
    network = parser.get_parsed_content("network_def")
    load_bundle_weights(network, parser.get_parsed_content("ckpt_path"), root)
    return network.to(torch.device(device)).eval()
