"""Zoo conformance: the checks MONAI's Model Zoo and MONAI Label rely on, run on any bundle folder.

Each check raises :class:`BundleCheckError` naming the bundle, the check and what is wrong, so a
failing bundle tells its author what to fix. The checks call MONAI's own ``verify_metadata``,
``verify_net_in_out`` and ``ckpt_export`` (as the Model Zoo's CI does) and add what those cannot
see: a changelog entry for the current version, and label names that agree between the metadata,
the label table the bundle writes, and the network's output channels.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out
from monai.data import load_net_with_metadata

from neurobundles.atomic import atomic_path
from neurobundles.networks import load_pretrained

from .discovery import bundle_parser, bundle_path
from .hub import bundle_remote_files
from .packaging import write_state_dict

__all__ = [
    "CHECKS",
    "METADATA_SCHEMA",
    "MONAILABEL_IDS",
    "TRAIN_IDS",
    "BundleCheckError",
    "check_bundle",
    "check_export",
    "check_labels",
    "check_metadata",
    "check_monailabel_config",
    "check_net_in_out",
    "check_train_config",
    "quick_shape",
]


METADATA_SCHEMA = Path(__file__).resolve().parent / "schemas" / "metadata.schema.json"
"""The metadata schema shipped with the package, written from MONAI's bundle specification."""

TRAIN_IDS = (
    "network",
    "network_def",
    "device",
    "train#dataset#data",
    "train#trainer#max_epochs",
    "validate#dataset#data",
)
"""Ids MONAI Label's bundle trainer overrides in ``train.json``; it loads ``models/model.pt`` into ``network``."""

MONAILABEL_IDS = ("network_def", "preprocessing", "inferer", "postprocessing")
"""Ids MONAI Label's bundle infer task builds from ``inference.json``."""

QUICK_EDGE = 32
"""Largest edge of the quick forward passes: the networks are fully convolutional at multiples of 32."""


def quick_shape(bundle: str | Path) -> tuple[int, ...]:
    """The metadata's input ``spatial_shape`` with each edge cut to :data:`QUICK_EDGE` (patch inputs as declared).

    ``neurobundles check --full`` runs at the declared shape, as the Model Zoo's CI does.
    """
    image = json.loads(_files(bundle)[1].read_text())["network_data_format"]["inputs"]["image"]
    shape = tuple(int(edge) for edge in image["spatial_shape"])
    return shape if image.get("is_patch_data") else tuple(min(edge, QUICK_EDGE) for edge in shape)


class BundleCheckError(ValueError):
    """A bundle fails a conformance check; the message names the bundle, the check and the problem."""

    def __init__(self, bundle: str, check: str, problem: str) -> None:
        super().__init__(f"{bundle}: {check}: {problem}")
        self.bundle, self.check, self.problem = bundle, check, problem


def _reason(error: BaseException) -> str:
    """The innermost cause of an error: MONAI wraps failures inside config expressions."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}".strip()


def _files(bundle: str | Path) -> tuple[Path, Path, Path]:
    """The bundle folder, its metadata and its inference config."""
    root = bundle_path(bundle)
    return root, root / "configs" / "metadata.json", root / "configs" / "inference.json"


def _pred_format(bundle: str | Path) -> dict[str, Any]:
    _, meta_file, _ = _files(bundle)
    return json.loads(meta_file.read_text())["network_data_format"]["outputs"]["pred"]


def check_metadata(bundle: str | Path) -> None:
    """``monai.bundle verify_metadata`` against the shipped schema (offline), then the changelog entry."""
    root, meta_file, _ = _files(bundle)
    try:
        verify_metadata(meta_file=str(meta_file), filepath=str(METADATA_SCHEMA))
    except ValueError as error:
        metadata = json.loads(meta_file.read_text())
        best = jsonschema.exceptions.best_match(
            jsonschema.Draft7Validator(json.loads(METADATA_SCHEMA.read_text())).iter_errors(metadata)
        )
        where = "/".join(str(part) for part in best.absolute_path) if best is not None else ""
        problem = best.message if best is not None else str(error)
        raise BundleCheckError(root.name, "metadata", f"{meta_file} at /{where}: {problem}") from error
    metadata = json.loads(meta_file.read_text())
    if metadata["version"] not in metadata["changelog"]:
        raise BundleCheckError(
            root.name,
            "metadata",
            f"{meta_file}: changelog has no entry for version {metadata['version']} "
            f"(entries: {', '.join(metadata['changelog'])}); say what changed in this version.",
        )


def check_net_in_out(bundle: str | Path, spatial_shape: Sequence[int] | None = None) -> None:
    """``monai.bundle verify_net_in_out network_def``; ``spatial_shape`` replaces the metadata's to save time."""
    root, meta_file, config_file = _files(bundle)
    override: dict[str, Any] = {"bundle_root": str(root)}
    if spatial_shape is not None:
        override["_meta_#network_data_format#inputs#image#spatial_shape"] = list(spatial_shape)
    try:
        verify_net_in_out(
            net_id="network_def", meta_file=str(meta_file), config_file=str(config_file), device="cpu", **override
        )
    except (ValueError, KeyError, RuntimeError) as error:
        raise BundleCheckError(
            root.name, "verify_net_in_out", f"network_def in {config_file} against {meta_file}: {_reason(error)}"
        ) from error


def _network_outputs(network: torch.nn.Module, in_channels: int, shape: Sequence[int]) -> torch.Tensor:
    network.eval()
    with torch.no_grad():
        return network(torch.rand(1, in_channels, *shape, generator=torch.Generator().manual_seed(0)))


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)


def check_labels(bundle: str | Path) -> None:
    """Label names agree: metadata ``channel_def``, ``num_channels``, the config's ``label_names``, the
    colour table ``configs/labels.txt`` (every class resolves, and it lists exactly the values written)
    and the network's outputs.
    """
    root, meta_file, config_file = _files(bundle)
    pred = _pred_format(root)
    count = int(pred["num_channels"])
    channel_def = {str(k): str(v) for k, v in pred["channel_def"].items()}
    expected = [str(i) for i in range(count)]
    if sorted(channel_def, key=int) != expected:
        raise BundleCheckError(
            root.name,
            "labels",
            f"{meta_file}: outputs#pred#channel_def names channels {sorted(channel_def, key=int)} "
            f"but num_channels is {count}; name every channel 0..{count - 1} exactly once.",
        )
    repeated = sorted({name for name in channel_def.values() if list(channel_def.values()).count(name) > 1})
    if repeated:
        raise BundleCheckError(root.name, "labels", f"{meta_file}: channel_def repeats {repeated}.")
    parser = bundle_parser(root)
    table = {str(k): str(v) for k, v in dict(parser.get_parsed_content("label_names")).items()}
    if table != channel_def:
        differ = {k: (channel_def.get(k), table.get(k)) for k in sorted(set(table) | set(channel_def), key=int)}
        differ = {k: v for k, v in differ.items() if v[0] != v[1]}
        raise BundleCheckError(
            root.name,
            "labels",
            f"label_names in {config_file} differs from channel_def in {meta_file} at "
            + ", ".join(f"{k}: {table_name!r} vs {meta_name!r}" for k, (meta_name, table_name) in differ.items()),
        )
    try:
        label_table = parser.get_parsed_content("label_table")
    except Exception as error:  # the table names the class it cannot resolve
        raise BundleCheckError(root.name, "labels", f"label_table in {config_file}: {_root_cause(error)}") from error
    written = sorted({value for values in label_table.class_values for value in values})
    if written != sorted(label_table.entries):
        raise BundleCheckError(
            root.name,
            "labels",
            f"{label_table.lut_path} lists {sorted(label_table.entries)} but the bundle writes {written}; "
            "list exactly the label values the bundle writes.",
        )
    in_channels = int(json.loads(meta_file.read_text())["network_data_format"]["inputs"]["image"]["num_channels"])
    outputs = _network_outputs(parser.get_parsed_content("network_def"), in_channels, quick_shape(root))
    if outputs.shape[1] != count:
        raise BundleCheckError(
            root.name,
            "labels",
            f"network_def in {config_file} outputs {outputs.shape[1]} channels but {meta_file} names {count} labels.",
        )


def check_export(
    bundle: str | Path, spatial_shape: Sequence[int] | None = None, ckpt_file: str | Path | None = None
) -> None:
    """``monai.bundle ckpt_export`` to TorchScript, reload, and compare with the eager network.

    ``ckpt_file`` defaults to the bundle's published weights converted by :func:`write_state_dict`; a bundle that
    publishes none (trained by its user) is checked with ``network_def``'s seeded initial weights.
    """
    root, meta_file, config_file = _files(bundle)
    spatial_shape = quick_shape(root) if spatial_shape is None else spatial_shape
    with tempfile.TemporaryDirectory(prefix=f"{root.name}-export-") as work:
        exported = Path(work) / "model.ts"
        ckpt = Path(ckpt_file) if ckpt_file else Path(work) / "model.pt"
        try:
            if ckpt_file is None and bundle_remote_files(root):
                write_state_dict(root, ckpt)
            elif ckpt_file is None:
                _write_initial_state_dict(root, ckpt)
            ckpt_export(
                net_id="network_def",
                filepath=str(exported),
                ckpt_file=str(ckpt),
                meta_file=str(meta_file),
                config_file=str(config_file),
                bundle_root=str(root),
            )
        except Exception as error:
            raise BundleCheckError(
                root.name, "ckpt_export", f"{ckpt} with network_def in {config_file}: {_reason(error)}"
            ) from error
        scripted, meta, _ = load_net_with_metadata(str(exported))
        version = json.loads(meta_file.read_text())["version"]
        if meta.get("version") != version:
            raise BundleCheckError(root.name, "ckpt_export", f"{exported} carries version {meta.get('version')}.")
        eager = load_pretrained(bundle_parser(root).get_parsed_content("network_def"), ckpt)
        in_channels = int(meta["network_data_format"]["inputs"]["image"]["num_channels"])
        expected = _network_outputs(eager, in_channels, spatial_shape)
        actual = _network_outputs(scripted, in_channels, spatial_shape)
        try:
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
        except AssertionError as error:
            raise BundleCheckError(
                root.name, "ckpt_export", f"TorchScript output differs from the eager network: {error}"
            ) from error


def _write_initial_state_dict(bundle: Path, target: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    network = bundle_parser(bundle).get_parsed_content("network_def")
    with atomic_path(target) as tmp:
        torch.save(network.state_dict(), tmp)


def check_monailabel_config(bundle: str | Path) -> None:
    """Build ``inference.json`` as MONAI Label's bundle infer task does: no metadata, ``bundle_root`` set.

    MONAI Label reads the ids ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing``
    and takes the first ``network_data_format`` input and output as the image and prediction keys;
    a config that reaches into ``@_meta_`` fails there and nowhere else.
    """
    root, meta_file, config_file = _files(bundle)
    formats = json.loads(meta_file.read_text())["network_data_format"]
    keys = (next(iter(formats["inputs"]), None), next(iter(formats["outputs"]), None))
    if keys != ("image", "pred"):
        raise BundleCheckError(
            root.name,
            "monailabel config",
            f"{meta_file}: the first network_data_format input and output are {keys}; MONAI Label feeds them to "
            "the transforms, which use 'image' and 'pred'.",
        )
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.config.update({"bundle_root": str(root)})  # type: ignore[union-attr]
    for key in MONAILABEL_IDS:
        try:
            parser.get_parsed_content(key, instantiate=True)
        except Exception as error:
            raise BundleCheckError(
                root.name,
                "monailabel config",
                f"{config_file}: {key!r} cannot be built the way MONAI Label builds it (without the metadata): "
                + _reason(error),
            ) from error


def check_train_config(bundle: str | Path) -> None:
    """``configs/train.json`` has every id MONAI Label's trainer overrides (no-op for inference-only bundles)."""
    root = bundle_path(bundle)
    train = root / "configs" / "train.json"
    if not train.is_file():
        return
    parser = ConfigParser()
    parser.read_config(str(train))
    missing = [key for key in TRAIN_IDS if key not in parser]
    if missing:
        raise BundleCheckError(
            root.name,
            "train config",
            f"{train} lacks {', '.join(missing)}; MONAI Label's trainer overrides or reads these ids.",
        )


CHECKS: Mapping[str, Callable[[str | Path], None]] = {
    "metadata": check_metadata,
    "labels": check_labels,
    "verify_net_in_out": lambda bundle: check_net_in_out(bundle, quick_shape(bundle)),
    "ckpt_export": check_export,
    "monailabel config": check_monailabel_config,
    "train config": check_train_config,
}
"""Every check by name, each with its quick settings."""

FULL_CHECKS: Mapping[str, Callable[[str | Path], None]] = {
    **CHECKS,
    "verify_net_in_out": lambda bundle: check_net_in_out(bundle, None),
}
"""The same, with the forward pass at the shape the metadata declares (minutes for the wide networks on CPU)."""


def check_bundle(bundle: str | Path, full: bool = False) -> dict[str, str | None]:
    """Run every check (``full``: at the declared input shape); returns check name → ``None`` or the problem."""
    results: dict[str, str | None] = {}
    for name, check in (FULL_CHECKS if full else CHECKS).items():
        try:
            check(bundle)
            results[name] = None
        except BundleCheckError as error:
            results[name] = error.problem
        except Exception as error:  # an earlier failure (say, metadata) can break a later check's assumptions
            results[name] = _reason(error)
    return results
