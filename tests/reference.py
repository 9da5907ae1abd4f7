"""A plain re-implementation of brainchop's published CLI pipeline, kept independent of the package.

conform (identity for conformed inputs: a cube of 1 mm voxels in LIA) → rescale to 0–255 (minimum → 0, 98th
percentile of non-zero voxels → 255, 1000-bin histogram) → 2–98 % quantile normalisation
((x − q02) / (q98 − q02 + 1e-3), clipped) → MeshNet → argmax → largest 26-connected component.
MeshNet here is written out with ``F.conv3d``: weights straight from the published file (safetensors
``model.<i>.weight`` or, for mindgrab, the torch checkpoint's ``model.<i>.0.weight``), then the
activation, with GroupNorm (one group per channel, no affine) before it when ``group_norm``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy import ndimage


def _published_convs(weights: Path) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    if weights.read_bytes()[:2] == b"PK":  # mindgrab: torch zip checkpoint
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    else:
        state = load_file(str(weights))
    layers = sorted({int(key.split(".")[1]) for key in state})
    convs = []
    for layer in layers:
        prefix = f"model.{layer}.0" if f"model.{layer}.0.weight" in state else f"model.{layer}"
        convs.append((state[f"{prefix}.weight"], state.get(f"{prefix}.bias")))
    return convs


def reference_segmentation(
    image: Path, weights: Path, dilations: list[int], activation: str, group_norm: bool = False
) -> np.ndarray:
    volume = nib.load(str(image))
    cube = len(set(volume.shape)) == 1 and np.allclose(volume.header.get_zooms()[:3], 1.0)
    if not cube or nib.aff2axcodes(volume.affine) != ("L", "I", "A"):
        raise ValueError("the reference handles conformed inputs only (a cube of 1 mm voxels in LIA)")
    x = np.asarray(volume.dataobj, dtype=np.float32)
    low, high = x.min(), x.max()
    counts, edges = np.histogram(x, 1000, (low, high))
    index = np.searchsorted(np.cumsum(counts), x.size - int(0.02 * np.count_nonzero(x)))
    upper = edges[min(index + 1, 1000)]
    x = np.rint(np.clip((x - low) * 255.0 / (upper - low), 0, 255))
    q02, q98 = np.quantile(x, [0.02, 0.98])
    x = np.clip((x - q02) / (q98 - q02 + 1e-3), 0, 1)

    convs = _published_convs(weights)
    act = {"relu": F.relu, "elu": F.elu, "gelu": F.gelu}[activation]
    t = torch.from_numpy(x.astype(np.float32))[None, None].contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        for position, (weight, bias) in enumerate(convs):
            dilation = dilations[position] if position < len(dilations) else 1
            t = F.conv3d(t, weight, bias, padding=dilation * (weight.shape[-1] // 2), dilation=dilation)
            if position < len(convs) - 1:
                if group_norm:
                    t = F.group_norm(t, t.shape[1], eps=1e-5)
                t = act(t)
    labels = t[0].argmax(0).numpy()
    components, _ = ndimage.label(labels > 0, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    labels[components != sizes.argmax()] = 0
    return labels
