"""iSeg-2017 in its exact public layout, built from real anatomy: FreeSurfer's fsaverage and fsaverage_xhemi.

Each subject is three Analyze 7.5 pairs, ``subject-N-{T1,T2,label}.{hdr,img}``, that nibabel reads as shape
(144, 192, 256, 1) at 1 mm: T1 and T2 as int16 (a public iSeg script converts the T1 "from int16", and two
int16 volumes make the 28 MB per subject another project reports), labels as uint8 with the values
0 / 10 / 150 / 250 (what challenge submissions are written as). The files carry no orientation (Analyze has
none; nibabel gives them its default radiological affine), so the arrays are stored L→R flipped, A, S: axis 0
left–right (144), axis 1 posterior–anterior (192), axis 2 inferior–superior (256).

How a subject is made from a FreeSurfer brain (``mri/orig.mgz``, ``aseg.mgz``, ``brainmask.mgz``; 256³, LIA):

- **tissue labels** from ``aseg.mgz`` (:data:`ASEG_TISSUE`): CSF = ventricles (lateral, inferior lateral, 3rd,
  4th, 5th), choroid plexus and ``CSF``; GM = cerebral and cerebellar cortex and the subcortical grey nuclei
  (thalamus, caudate, putamen, pallidum, hippocampus, amygdala, accumbens, ventral DC); WM = cerebral and
  cerebellar white matter, brain stem, corpus callosum, optic chiasm, white-matter hypointensities; vessels
  and anything else background. aseg leaves the extra-cerebral CSF unlabelled, so brain-mask voxels within
  2 mm outside the labelled brain become CSF too, as in iSeg's labels, which include the sulcal CSF.
- **size**: scaled by 0.85 (an adult brain of 140 mm across shrinks to ~120 mm, nearer a 6-month infant's and
  leaving room to shift it inside the 144-voxel axis), trilinear for the image, nearest for the labels.
- **T1**: the real ``orig.mgz`` intensities inside the labelled brain (×4, background 0, as iSeg's skull-stripped
  images), with per-subject gain and noise.
- **T2-like**: inverted tissue ordering, CSF brightest and WM darkest, from the real image: half the negated T1
  (its real texture and partial volumes) plus half a level per tissue (CSF 240, GM 150, WM 90), ×4, with its own
  gain and noise.
- **subjects differ**: odd subject numbers use fsaverage, even ones its mirror fsaverage_xhemi; each subject is
  shifted by up to ±6 voxels per axis, and gains and noise are drawn from a generator seeded by its number.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

ISEG_SHAPE = (144, 192, 256)
ISEG_VALUES = (0, 10, 150, 250)
SCALE = 0.85

ASEG_TISSUE = {
    1: (4, 43, 5, 44, 14, 15, 72, 24, 31, 63),
    2: (3, 42, 8, 47, 10, 49, 11, 50, 12, 51, 13, 52, 17, 53, 18, 54, 26, 58, 28, 60),
    3: (2, 41, 7, 46, 16, 251, 252, 253, 254, 255, 85, 77),
}
"""Tissue class (1 CSF, 2 GM, 3 WM) → FreeSurfer aseg ids; unlisted ids (vessels 30/62, unknown) are background."""

T2_LEVELS = np.array([0.0, 240.0, 150.0, 90.0], dtype=np.float32)
"""Per-class T2 levels (background, CSF, GM, WM), mixed half and half with the negated real T1."""


def _to_las(lia: np.ndarray) -> np.ndarray:
    """FreeSurfer's LIA voxel order (i left, j inferior, k anterior) → (left, anterior, superior)."""
    return np.ascontiguousarray(np.transpose(lia, (0, 2, 1))[:, :, ::-1])


@functools.lru_cache(maxsize=2)
def brain(subject_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """``(t1, classes)`` of a FreeSurfer subject, LAS voxel order, scaled by :data:`SCALE`, cropped to the brain.

    ``t1`` is float32 (orig.mgz units, 0 outside the brain), ``classes`` uint8 0–3.
    """
    mri = Path(subject_dir) / "mri"
    aseg = np.asarray(nib.load(str(mri / "aseg.mgz")).dataobj).astype(np.int32)
    orig = np.asarray(nib.load(str(mri / "orig.mgz")).dataobj).astype(np.float32)
    mask = np.asarray(nib.load(str(mri / "brainmask.mgz")).dataobj) > 0
    corners = np.argwhere(aseg > 0)
    around = tuple(slice(max(int(lo) - 3, 0), int(hi) + 4) for lo, hi in zip(corners.min(0), corners.max(0)))
    aseg, orig, mask = aseg[around], orig[around], mask[around]  # 5× fewer voxels for what follows
    table = np.zeros(int(aseg.max()) + 1, dtype=np.uint8)
    for tissue, ids in ASEG_TISSUE.items():
        table[[i for i in ids if i < table.size]] = tissue
    classes = table[aseg]
    labelled = classes > 0
    shell = ndimage.binary_dilation(labelled, iterations=2) & mask & ~labelled
    classes[shell] = 1  # extra-cerebral CSF
    t1, classes = _to_las(orig), _to_las(classes)
    size = [round(s * SCALE) for s in t1.shape]
    t1 = torch.nn.functional.interpolate(torch.from_numpy(t1)[None, None], size=size, mode="trilinear")[0, 0].numpy()
    classes = torch.nn.functional.interpolate(torch.from_numpy(classes)[None, None].float(), size=size, mode="nearest")
    classes = classes[0, 0].numpy().astype(np.uint8)
    corners = np.argwhere(classes)
    box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(corners.min(0), corners.max(0)))
    classes = classes[box]
    return np.where(classes > 0, t1[box], 0).astype(np.float32), classes


def _place(volume: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``volume`` centred in an iSeg-sized grid, moved by ``shift`` voxels (zeros around)."""
    out = np.zeros(ISEG_SHAPE, dtype=volume.dtype)
    start = (np.asarray(ISEG_SHAPE) - volume.shape) // 2 + shift
    if (start < 0).any() or (start + volume.shape > ISEG_SHAPE).any():
        raise ValueError(f"a brain of {volume.shape} shifted by {tuple(shift)} does not fit in {ISEG_SHAPE}.")
    out[tuple(slice(s, s + n) for s, n in zip(start, volume.shape))] = volume
    return out


def subject_arrays(freesurfer: Path, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t1 int16, t2 int16, label uint8 with values 0/10/150/250)`` of subject ``number``, each 144×192×256."""
    source = "fsaverage" if number % 2 else "fsaverage_xhemi"
    t1_brain, classes = brain(str(Path(freesurfer) / source))
    rng = np.random.default_rng(1000 + number)
    shift = rng.integers(-6, 7, size=3)
    gain_t1, gain_t2 = rng.uniform(0.9, 1.1, size=2)
    classes = _place(classes, shift)
    inside = classes > 0
    t1 = _place(t1_brain, shift) * 4 * gain_t1
    t2 = (0.5 * np.where(inside, 255 - t1 / (4 * gain_t1), 0) + 0.5 * T2_LEVELS[classes]) * 4 * gain_t2
    noise = rng.normal(0, 6.0, size=(2, int(inside.sum()))).astype(np.float32)
    t1[inside] += noise[0]
    t2[inside] += noise[1]
    as_int16 = [np.clip(np.rint(v), 0, 32767).astype(np.int16) for v in (t1, t2)]
    label = np.asarray(ISEG_VALUES, dtype=np.uint8)[classes]
    return as_int16[0], as_int16[1], label


def write_analyze(path: Path, data: np.ndarray) -> Path:
    """``path`` (``.hdr``/``.img`` pair, written from either name) holding ``data`` as 4D with a trailing 1."""
    image = nib.AnalyzeImage(data[..., None], affine=None)
    image.header.set_zooms((1.0, 1.0, 1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.to_filename(str(path.with_suffix(".hdr")))
    return path.with_suffix(".img")


def make_iseg2017(root: Path, freesurfer: Path, training: Iterable[int] = (1, 2), testing: Iterable[int] = ()) -> Path:
    """``root/iSeg-2017-Training/subject-N-{T1,T2,label}.{hdr,img}`` and ``root/iSeg-2017-Testing/...``; returns root.

    Build only the subjects a test needs (each takes ~0.5 s and 35 MB); the real dataset has training
    subjects 1–10 and testing subjects 11–23.

    Args:
        root: folder to write into.
        freesurfer: the shared data's ``freesurfer`` folder (``fsaverage`` and ``fsaverage_xhemi``).
        training: labelled subject numbers.
        testing: unlabelled subject numbers.
    """
    for subset, numbers, kinds in (
        ("iSeg-2017-Training", training, ("T1", "T2", "label")),
        ("iSeg-2017-Testing", testing, ("T1", "T2")),
    ):
        for number in numbers:
            arrays = dict(zip(("T1", "T2", "label"), subject_arrays(freesurfer, number)))
            for kind in kinds:
                write_analyze(root / subset / f"subject-{number}-{kind}.img", arrays[kind])
    return root
