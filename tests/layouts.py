"""Tiny synthetic brains written in the exact folder layouts of Mindboggle-101 and FreeSurfer subjects folders.

Each brain is an ellipsoid with white matter, a thalamus, a cortical ribbon cut into DKT31 regions (left and
right ids), CSF around it, and T1-like intensities (white > grey > CSF), so a network can learn something in a
few iterations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

MINDBOGGLE_GROUPS = {"OASIS-TRT-20": 2, "NKI-RS-22": 1, "HLN-12": 1, "Colin27-1": 1}
"""Group → subjects, named like the real ones (``OASIS-TRT-20-1``...; single-brain groups name the brain alike)."""

CORTEX_REGIONS = (1028, 1022, 1009, 1011, 1001)
"""Regions of the ribbon by sector: superiorfrontal, postcentral, inferiortemporal, lateraloccipital, and
bankssts (Desikan-Killiany only: DKT31 maps it to background)."""

LIA = np.array([[-1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])


def synthetic_brain(shape: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(t1, labels)`` arrays in RAS voxel order; labels are FreeSurfer ids."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    radii = np.array([0.78, 0.86, 0.72]) * rng.uniform(0.95, 1.05, 3)
    r = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    right = x > 0
    labels = np.zeros(shape, dtype=np.int32)
    labels[r < 0.95] = 24  # CSF
    sector = np.where(z > 0.15, np.where(y > 0, 0, 1), np.where(y > 0.3, 4, np.where(y > -0.3, 2, 3)))
    cortex = np.asarray(CORTEX_REGIONS)[sector] + 1000 * right
    labels = np.where(r < 0.8, cortex, labels)
    labels = np.where(r < 0.5, np.where(right, 41, 2), labels)  # cerebral white matter
    labels = np.where(r < 0.2, np.where(right, 49, 10), labels)  # thalamus
    intensity = {0: 3.0, 24: 30.0, 2: 115.0, 41: 115.0, 10: 90.0, 49: 90.0}
    t1 = np.full(shape, 70.0)  # grey matter
    for value, level in intensity.items():
        t1[labels == value] = level
    t1 = np.clip(t1 * rng.uniform(0.9, 1.1) + rng.normal(0, 4, shape), 0, None)
    return t1.astype(np.float32), labels


def make_mindboggle(
    root: Path, groups: dict[str, int] | None = None, shape: Sequence[int] = (32, 32, 32), seed: int = 0
) -> Path:
    """``root/<group>_volumes/<subject>/t1weighted.nii.gz`` + ``labels.DKT31.manual+aseg.nii.gz``; returns ``root``."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -np.asarray(shape) / 2
    index = seed
    for group, count in (groups or MINDBOGGLE_GROUPS).items():
        for number in range(1, count + 1):
            subject = group if group.endswith("-1") else f"{group}-{number}"  # Colin27-1_volumes/Colin27-1
            folder = root / f"{group}_volumes" / subject
            folder.mkdir(parents=True)
            t1, labels = synthetic_brain(shape, index)
            index += 1
            nib.save(nib.Nifti1Image(t1, affine), str(folder / "t1weighted.nii.gz"))
            nib.save(nib.Nifti1Image(labels.astype(np.int16), affine), str(folder / "labels.DKT31.manual+aseg.nii.gz"))
    return root


def _lia(ras: np.ndarray) -> np.ndarray:
    """RAS voxel order to LIA voxel order: i = -x, j = -z, k = y."""
    return np.transpose(ras[::-1, :, ::-1], (0, 2, 1))


def make_freesurfer(
    root: Path,
    subjects: Sequence[str] = ("bert", "ernie", "grover"),
    shape: Sequence[int] = (32, 32, 32),
    seed: int = 0,
) -> Path:
    """A subjects folder: ``root/<subject>/mri/orig.mgz`` + ``aparc+aseg.mgz`` on an LIA grid, as FreeSurfer writes."""
    affine = LIA.copy()
    affine[:3, 3] = -LIA[:3, :3] @ (np.asarray(shape) / 2)
    for index, subject in enumerate(subjects):
        mri = root / subject / "mri"
        mri.mkdir(parents=True)
        t1, labels = synthetic_brain(shape, seed + index)
        nib.save(nib.MGHImage(np.clip(_lia(t1), 0, 255).astype(np.uint8), affine), str(mri / "orig.mgz"))
        nib.save(nib.MGHImage(_lia(labels).astype(np.int32), affine), str(mri / "aparc+aseg.mgz"))
    (root / "fsaverage_scripts").mkdir(exist_ok=True)  # FreeSurfer subject folders sit beside other things
    return root
