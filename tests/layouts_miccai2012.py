"""MICCAI 2012 Multi-Atlas Labeling fixtures in the release's exact layout, built from real FreeSurfer anatomy.

``root/training-images/<id>_3.nii.gz`` holds a T1 (FreeSurfer's ``orig.mgz``: the whole head, like the OASIS
scans of the release) and ``root/training-labels/<id>_3_glm.nii.gz`` its label map in Neuromorphometrics ids,
converted from ``aparc+aseg.mgz``: subcortical structures one to one, cortical parcels to Neuromorphometrics
parcels ≥ 100 (odd = left, even = right), corpus callosum into the nearest hemisphere's white matter, and a few
voxels of 42/43 ("Cerebral Exterior") on the cortex's outer border, as the real labels have, to prove that the
pipeline ignores them. Subjects cycle through the FreeSurfer subjects given (``fsaverage``, ``fsaverage_xhemi``).

Header choices (the real release was not at hand to check): NIfTI-1, int16 images and int16 labels, 1 mm
voxels, 256 × 256 × N with the third axis running through coronal slices; we keep FreeSurfer's LIA grid
(256³) unless ``crop``/``downsample`` shrink it for fast tests (42/43 are placed after shrinking).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from neurobundles.data.miccai2012 import TESTING_IDS, TRAINING_IDS, freesurfer_to_neuromorphometrics

EXTERIOR_VOXELS = 50
"""Voxels of each of 42/43 written per subject (the release has about a hundred)."""


def _exterior(labels: np.ndarray, count: int) -> np.ndarray:
    """Relabel ``count`` unlabelled voxels just outside each hemisphere's cortex to 42 (right) / 43 (left)."""
    out = labels.copy()
    points = np.argwhere(labels > 0)
    low, high = np.maximum(points.min(0) - 1, 0), points.max(0) + 2
    box = tuple(slice(a, b) for a, b in zip(low, high))
    for value in (42, 43):
        region = labels[box]
        border = (region == 0) & ndimage.binary_dilation(np.isin(region, _cortex_ids(value)))
        points = np.argwhere(border) + low
        if count and len(points):
            out[tuple(points[np.linspace(0, len(points) - 1, count).astype(int)].T)] = value
    return out


def _cortex_ids(exterior: int) -> list[int]:
    """Neuromorphometrics parcel ids of the hemisphere of exterior label 42 (right: even) or 43 (left: odd)."""
    return list(range(100 + (exterior == 43), 256, 2))


def subject_volumes(subject_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t1 int16, labels int16 in Neuromorphometrics ids, affine)`` of one FreeSurfer subject (no 42/43 yet)."""
    mri = subject_dir / "mri"
    orig = nib.load(str(mri / "orig.mgz"))
    aparc = np.asarray(nib.load(str(mri / "aparc+aseg.mgz")).dataobj).astype(np.int64)
    labels = freesurfer_to_neuromorphometrics(aparc).astype(np.int16)
    t1 = np.asarray(orig.dataobj).astype(np.int16)
    return t1, labels, orig.affine


def _mode(rows: np.ndarray) -> np.ndarray:
    """Most frequent value of each row (ties: the smallest)."""
    ordered = np.sort(rows, axis=1)
    change = np.ones(ordered.shape, dtype=bool)
    change[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = np.cumsum(change, axis=1)
    width = rows.shape[1] + 1
    counts = np.bincount((np.arange(len(rows))[:, None] * width + run).ravel(), minlength=len(rows) * width)
    best = counts.reshape(len(rows), width).argmax(1)
    return ordered[np.arange(len(rows)), (run == best[:, None]).argmax(1)]


def downsample_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Majority label of each ``factor³`` block, the cortical parcels of a hemisphere counting as one label
    (the block then takes its most frequent parcel), so the thin cortex stays a closed ribbon."""
    shape = [n // factor for n in labels.shape]
    cut = labels[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor].astype(np.int64)
    blocks = cut.reshape(shape[0], factor, shape[1], factor, shape[2], factor).transpose(0, 2, 4, 1, 3, 5)
    rows = blocks.reshape(-1, factor**3)
    groups = np.where(rows >= 100, 1000 + rows % 2, rows)  # 1000: right cortex, 1001: left cortex
    out = _mode(groups)
    cortex = np.flatnonzero(out >= 1000)
    if len(cortex):
        rows = rows[cortex]
        own = (rows >= 100) & (rows % 2 == (out[cortex] % 2)[:, None])  # parcels of the winning hemisphere
        where = np.nonzero(own)
        counts = np.bincount(where[0] * 256 + rows[where], minlength=len(cortex) * 256)
        out[cortex] = counts.reshape(len(cortex), 256).argmax(1)
    return out.reshape(shape).astype(labels.dtype)


def _shrink(
    t1: np.ndarray, labels: np.ndarray, affine: np.ndarray, downsample: int, crop: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block-mean ``t1`` and majority-vote ``labels`` over ``downsample³`` blocks; then crop to ``crop`` voxels
    around the brain."""
    affine = affine.copy()
    if downsample > 1:
        f = downsample
        shape = [n // f * f for n in t1.shape]
        t1 = t1[: shape[0], : shape[1], : shape[2]].astype(np.float32)
        t1 = t1.reshape(shape[0] // f, f, shape[1] // f, f, shape[2] // f, f).mean((1, 3, 5))
        t1 = np.rint(t1).astype(np.int16)
        labels = downsample_labels(labels, f)
        affine[:3, 3] = affine[:3, :3] @ np.full(3, (f - 1) / 2) + affine[:3, 3]
        affine[:3, :3] = affine[:3, :3] * f
    if crop is not None:
        centre = np.argwhere(labels > 0).mean(0).round().astype(int)
        size = np.minimum(np.asarray(crop, dtype=int), labels.shape)
        start = np.clip(centre - size // 2, 0, np.asarray(labels.shape) - size)
        box = tuple(slice(s, s + n) for s, n in zip(start, size))
        t1, labels = t1[box], labels[box]
        affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return t1, labels, affine


def make_miccai2012(
    root: Path,
    freesurfer: Path,
    training: int = 2,
    testing: int = 0,
    subjects: Sequence[str] = ("fsaverage", "fsaverage_xhemi"),
    downsample: int = 1,
    crop: Sequence[int] | None = None,
    compress: bool = True,
    exterior_voxels: int = EXTERIOR_VOXELS,
) -> Path:
    """Write ``training`` (≤ 15) training and ``testing`` (≤ 20) testing subjects under ``root``; returns ``root``.

    Args:
        root: the release folder to create.
        freesurfer: the FreeSurfer subjects folder (``../shared/data/freesurfer``).
        training: training subjects, named by the release's first training ids.
        testing: testing subjects, named by the release's first testing ids.
        subjects: FreeSurfer subjects to cycle through.
        downsample: integer voxel-size factor (block-mean T1, majority labels) for fast tests.
        crop: final box size in voxels, centred on the labelled brain.
        compress: ``.nii.gz`` (``False``: ``.nii``).
        exterior_voxels: voxels of 42 and of 43 per subject.
    """
    if training > len(TRAINING_IDS) or testing > len(TESTING_IDS):
        raise ValueError(f"at most {len(TRAINING_IDS)} training and {len(TESTING_IDS)} testing subjects.")
    suffix = ".nii.gz" if compress else ".nii"
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    jobs = [("training", i, s) for i, s in enumerate(TRAINING_IDS[:training])]
    jobs += [("testing", training + i, s) for i, s in enumerate(TESTING_IDS[:testing])]
    for split, index, subject_id in jobs:
        source = subjects[index % len(subjects)]
        if source not in cache:
            t1, labels, affine = _shrink(*subject_volumes(Path(freesurfer) / source), downsample, crop)
            cache[source] = (t1, _exterior(labels, exterior_voxels), affine)
        t1, labels, affine = cache[source]
        images, label_dir = root / f"{split}-images", root / f"{split}-labels"
        images.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(t1, affine)
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, str(images / f"{subject_id}_3{suffix}"))
        label = nib.Nifti1Image(labels, affine)
        label.header.set_xyzt_units("mm", "sec")
        nib.save(label, str(label_dir / f"{subject_id}_3_glm{suffix}"))
    return root
