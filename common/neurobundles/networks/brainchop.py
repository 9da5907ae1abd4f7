"""Import the MeshNet weights published by the brainchop authors (neuroneural/brainchop-models).

Three file forms exist and all map onto :class:`~neurobundles.networks.MeshNet`:

* ``model.pth`` as safetensors (despite the extension), keys ``model.<i>.weight``/``.bias`` with
  convolutions at even ``i`` and activations between them;
* ``model.pth`` as a torch zip checkpoint (mindgrab), keys ``model.<i>.0.weight`` per block;
* TensorFlow.js ``model.json`` + ``model.bin``: float32 little-endian in manifest order, kernels
  stored ``[kd, kh, kw, Cin, Cout]``.

The weights are already in nibabel (i, j, k) axis order, so no spatial transpose is applied.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .meshnet import MeshNet

__all__ = [
    "ConvWeights",
    "load_pretrained",
    "meshnet_from_brainchop",
    "meshnet_kwargs",
    "read_conv_weights",
]

ConvWeights = list[tuple[torch.Tensor, torch.Tensor | None]]
"""Convolution (weight, bias) pairs in forward order, PyTorch layout ``[Cout, Cin, kd, kh, kw]``."""

_BRAINCHOP_KEY = re.compile(r"^(?:module\.)?model\.(\d+)\.(?:0\.)?(weight|bias)$")


def _file_kind(path: Path) -> str:
    """Tell the weight file formats apart by content, not by extension."""
    if path.suffix == ".json":
        return "tfjs"
    with path.open("rb") as stream:
        head = stream.read(16)
    if head[:2] == b"PK":
        return "torch"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len < path.stat().st_size and head[8:9] == b"{":
            return "safetensors"
    raise ValueError(
        f"{path}: not a MeshNet weight file this package can read "
        "(expected safetensors, a torch checkpoint, or a TensorFlow.js model.json)."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    kind = _file_kind(path)
    if kind == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model", "network"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}.")
    return dict(state)


def _convs_from_brainchop_keys(state: Mapping[str, torch.Tensor], path: Path) -> ConvWeights:
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _BRAINCHOP_KEY.match(key)
        if match and (match.group(2) == "bias" or value.ndim >= 3):
            layers.setdefault(int(match.group(1)), {})[match.group(2)] = value.float()
    if not layers:
        raise ValueError(f"{path}: no brainchop MeshNet keys (model.<i>.weight) found; keys: {list(state)[:6]}...")
    return [(layers[i]["weight"], layers[i].get("bias")) for i in sorted(layers)]


def _read_tfjs(model_json: Path) -> ConvWeights:
    spec = json.loads(model_json.read_text())
    manifest = spec["weightsManifest"]
    shards = [name for group in manifest for name in group["paths"]]
    files = [model_json.parent / name for name in shards]
    if len(files) == 1 and not files[0].exists():  # brainchop renames the single shard to model.bin
        files = [next((f for f in _bin_candidates(model_json) if f.exists()), files[0])]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{model_json}: weight shard(s) not found: {', '.join(missing)}")
    blob = b"".join(f.read_bytes() for f in files)
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for group in manifest:
        for entry in group["weights"]:
            if entry.get("dtype", "float32") != "float32":
                raise ValueError(f"{model_json}: unsupported dtype {entry['dtype']} for {entry['name']}.")
            count = int(np.prod(entry["shape"]))
            tensors[entry["name"]] = np.frombuffer(blob, "<f4", count, offset).reshape(entry["shape"])
            offset += 4 * count
    if offset != len(blob):
        raise ValueError(f"{model_json}: manifest describes {offset} bytes but the shards hold {len(blob)}.")
    convs: ConvWeights = []
    for layer in _tfjs_layers(spec, "Conv3D"):
        name = layer["config"]["name"]
        kernel = torch.from_numpy(tensors[f"{name}/kernel"].copy()).permute(4, 3, 0, 1, 2).contiguous()
        bias = tensors.get(f"{name}/bias")
        convs.append((kernel, None if bias is None else torch.from_numpy(bias.copy())))
    return convs


def _bin_candidates(model_json: Path) -> list[Path]:
    return [model_json.with_suffix(".bin"), model_json.parent / "model.bin"]


def _read_bin_with_layer_list(path: Path, model_json: Path) -> ConvWeights:
    """``model.bin`` described by a PyTorch-style ``model.json`` layer list instead of a tfjs manifest."""
    spec = json.loads(model_json.read_text())
    blob = np.fromfile(path, "<f4")
    has_bias = bool(spec.get("bias", True))
    convs: ConvWeights = []
    offset = 0
    for layer in spec["layers"]:
        k, cin, cout = int(layer["kernel_size"]), int(layer["in_channels"]), int(layer["out_channels"])
        if cin < 1 or cout < 1:
            raise ValueError(f"{model_json}: placeholder channel counts; read the weights from model.pth instead.")
        count = k * k * k * cin * cout
        kernel = torch.from_numpy(blob[offset : offset + count].reshape(k, k, k, cin, cout).copy())
        offset += count
        bias = None
        if has_bias:
            bias = torch.from_numpy(blob[offset : offset + cout].copy())
            offset += cout
        convs.append((kernel.permute(4, 3, 0, 1, 2).contiguous(), bias))
    if offset != blob.size:
        raise ValueError(f"{path}: holds {blob.size} floats but {model_json} describes {offset}.")
    return convs


def _tfjs_layers(spec: Mapping[str, Any], class_name: str | None = None) -> list[dict]:
    layers = spec["modelTopology"]["model_config"]["config"]["layers"]
    return [layer for layer in layers if class_name is None or layer["class_name"] == class_name]


def read_conv_weights(path: str | Path) -> ConvWeights:
    """Read every convolution of a brainchop MeshNet file, in forward order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MeshNet weight file not found: {path}")
    if path.suffix == ".bin":
        model_json = path.with_suffix(".json")
        if not model_json.is_file():
            raise FileNotFoundError(f"{path}: TensorFlow.js weights need {model_json} beside them.")
        if "modelTopology" in json.loads(model_json.read_text()):
            return _read_tfjs(model_json)
        return _read_bin_with_layer_list(path, model_json)
    if _file_kind(path) == "tfjs":
        return _read_tfjs(path)
    return _convs_from_brainchop_keys(_read_state_dict(path), path)


def meshnet_kwargs(model_json: str | Path, convs: ConvWeights | None = None) -> dict[str, Any]:
    """:class:`MeshNet` arguments described by a brainchop ``model.json`` (either layout).

    Channel counts come from the weights when given, because some files use ``-1`` placeholders.
    """
    model_json = Path(model_json)
    spec = json.loads(model_json.read_text())
    if "modelTopology" in spec:
        conv_layers = [layer["config"] for layer in _tfjs_layers(spec, "Conv3D")]
        dilations = [int(c["dilation_rate"][0]) for c in conv_layers]
        kernels = [int(c["kernel_size"][0]) for c in conv_layers]
        widths = [int(c["filters"]) for c in conv_layers]
        acts = {layer["config"]["activation"] for layer in _tfjs_layers(spec, "Activation")}
        act = acts.pop() if len(acts) == 1 else "relu"
        bias = bool(conv_layers[0].get("use_bias", True))
        final_bias = bool(conv_layers[-1].get("use_bias", True))
        norm = None
        in_channels = 1
    else:
        layers = spec["layers"]
        dilations = [int(layer["dilation"]) for layer in layers]
        kernels = [int(layer["kernel_size"]) for layer in layers]
        widths = [int(layer["out_channels"]) for layer in layers]
        act = "gelu" if spec.get("gelu") else "elu" if spec.get("elu") else "relu"
        bias = bool(spec.get("bias", not spec.get("bnorm", False)))
        final_bias = True
        norm = "norm" if spec.get("bnorm") else None
        in_channels = max(int(layers[0]["in_channels"]), 1)
    if convs is not None:
        if len(convs) != len(dilations):
            raise ValueError(f"{model_json}: describes {len(dilations)} layers but the weights hold {len(convs)}.")
        widths = [int(w.shape[0]) for w, _ in convs]
        in_channels = int(convs[0][0].shape[1])
        bias = convs[0][1] is not None
        final_bias = convs[-1][1] is not None
    if norm is not None:
        # brainchop folds BatchNorm into the convolutions before export; an un-folded norm without
        # parameters (mindgrab) is GroupNorm with one group per channel and no affine.
        norm = ("group", {"num_groups": widths[0], "affine": False})
    if kernels[-1] != 1 or len(set(kernels[:-1])) != 1:
        raise ValueError(f"{model_json}: expected k×k×k dilated layers and a final 1×1×1 layer, got {kernels}.")
    return {
        "spatial_dims": 3,
        "in_channels": in_channels,
        "out_channels": widths[-1],
        "channels": widths[:-1],
        "dilations": dilations[:-1],
        "kernel_size": kernels[0],
        "act": act,
        "norm": norm,
        "dropout": float(spec.get("dropout_p", 0.0) or 0.0),
        "bias": bias,
        "final_bias": final_bias,
    }


def _conv_modules(network: nn.Module) -> list[nn.Module]:
    return [m for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd)]


def _assign_convs(network: nn.Module, convs: ConvWeights, source: Path) -> None:
    modules = _conv_modules(network)
    if len(modules) != len(convs):
        raise ValueError(f"{source}: holds {len(convs)} convolutions but the network has {len(modules)}.")
    for index, (module, (weight, bias)) in enumerate(zip(modules, convs)):
        if tuple(module.weight.shape) != tuple(weight.shape):
            raise ValueError(
                f"{source}: layer {index} weight has shape {tuple(weight.shape)}, "
                f"the network expects {tuple(module.weight.shape)}; check channels/out_channels in the config."
            )
        if (module.bias is None) != (bias is None):
            raise ValueError(f"{source}: layer {index} bias presence differs from the network's (set bias=...).")
        with torch.no_grad():
            module.weight.copy_(weight)
            if bias is not None:
                module.bias.copy_(bias)


def load_pretrained(network: nn.Module, path: str | Path) -> nn.Module:
    """Load weights into ``network`` from any supported file and return it.

    Accepts this package's own checkpoints (a ``state_dict`` of ``network``, possibly wrapped under
    ``"network"``/``"model"``/``"state_dict"`` as MONAI's CheckpointSaver writes it) and every
    brainchop form. Raises a ``ValueError`` naming the file when shapes or layer counts disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix in (".json", ".bin"):
        _assign_convs(network, read_conv_weights(path), path)
        return network
    state = _read_state_dict(path)
    own_keys = set(network.state_dict())
    if own_keys and own_keys <= set(state):
        network.load_state_dict({k: state[k] for k in own_keys})
    else:
        _assign_convs(network, _convs_from_brainchop_keys(state, path), path)
    return network


def meshnet_from_brainchop(model_json: str | Path, weights: str | Path | None = None) -> MeshNet:
    """Build a :class:`MeshNet` from a brainchop model folder's ``model.json`` and load its weights.

    ``weights`` defaults to ``model.pth`` beside the JSON, or the JSON itself for TensorFlow.js files.
    """
    model_json = Path(model_json)
    if weights is None:
        is_tfjs = "modelTopology" in json.loads(model_json.read_text())
        weights = model_json if is_tfjs else model_json.with_name("model.pth")
    convs = read_conv_weights(weights)
    network = MeshNet(**meshnet_kwargs(model_json, convs))
    _assign_convs(network, convs, Path(weights))
    return network
