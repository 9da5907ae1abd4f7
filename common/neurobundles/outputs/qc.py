"""A quality-control picture per subject: three orthogonal slices with the labels overlaid."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.atomic import atomic_save, ensure_writable_dir
from neurobundles.filenames import image_stem
from neurobundles.labels import LabelTable

__all__ = ["SaveQCPreviewd", "qc_figure"]

logger = logging.getLogger(__name__)


def _to_lia(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    transform = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt("LIA"))
    return nib.orientations.apply_orientation(volume, transform)


def _overlay(labels: np.ndarray, colors: Mapping[int, tuple[int, int, int]], alpha: float) -> np.ndarray:
    lookup = np.zeros((int(labels.max(initial=0)) + 1, 4), dtype=np.float32)
    for value, rgb in colors.items():
        if 0 < value < lookup.shape[0]:
            lookup[value] = (*(c / 255.0 for c in rgb), alpha)
    return lookup[labels.astype(np.int64)]


def _centre(mask: np.ndarray) -> tuple[int, ...]:
    """Voxel centre of mass of a 3D mask (the grid centre when empty), from its projections on each axis."""
    total = int(mask.sum())
    if total == 0:
        return tuple(int(size / 2) for size in mask.shape)
    plane = mask.sum(axis=0, dtype=np.int64)
    profiles = (mask.sum(axis=(1, 2), dtype=np.int64), plane.sum(axis=1), plane.sum(axis=0))
    return tuple(int(np.dot(np.arange(len(profile)), profile) / total) for profile in profiles)


def qc_figure(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    colors: Mapping[int, tuple[int, int, int]],
    title: str,
    path: Path,
) -> None:
    """Save sagittal, coronal and axial slices through the labels' centre, radiological convention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, labels = _to_lia(image, affine), _to_lia(labels, affine)  # axes: to Left, to Inferior, to Anterior
    i, j, k = _centre(labels > 0)
    low, high = np.percentile(image[::2, ::2, ::2], [1, 99.5])  # an eighth of the voxels: 10× faster, same window
    views = [
        ("sagittal", image[i], labels[i], "S", "P  A"),  # rows inferior-down, columns posterior→anterior
        ("coronal", image[:, :, k].T, labels[:, :, k].T, "S", "R  L"),
        ("axial", image[:, j, :].T[::-1], labels[:, j, :].T[::-1], "A", "R  L"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4), facecolor="black")
    for axis, (name, plane, plane_labels, top, sides) in zip(axes, views):
        axis.imshow(plane, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        axis.imshow(_overlay(plane_labels, colors, 0.45), interpolation="nearest")
        axis.set_title(f"{name}   (top: {top}, left→right: {sides})", color="white", fontsize=9)
        axis.axis("off")
    figure.suptitle(title, color="white", fontsize=10)
    figure.tight_layout()
    atomic_save(path, lambda tmp: figure.savefig(tmp, format="png", dpi=80, facecolor="black"))
    plt.close(figure)


class SaveQCPreviewd(MapTransform):
    """Write ``<id>_qc.png`` from the (conformed) image and its labels; place it before ``Invertd``.

    Args:
        keys: label key(s) to draw (class indices or label values present in ``table``).
        output_dir: folder for the pictures.
        table: gives the colours.
        image_key: the intensity image in the same grid.
        id_key: data key naming the subject.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        table: LabelTable,
        image_key: str = "image",
        id_key: str = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.colors = table.colors()
        self.image_key = image_key
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        ensure_writable_dir(self.output_dir)
        image = d[self.image_key]
        for key in self.key_iterator(d):
            labels = d[key]
            source = labels.meta.get("filename_or_obj", "")
            ident = str(d.get(self.id_key) or image_stem(source))
            path = self.output_dir / f"{ident}_qc.png"
            qc_figure(
                np.asarray(image.detach().cpu())[0],
                np.asarray(labels.detach().cpu())[0],
                labels.affine.numpy(),
                self.colors,
                f"{ident}: {source}",
                path,
            )
        return d
