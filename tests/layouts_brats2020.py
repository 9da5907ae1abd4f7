"""BraTS 2020 cases in the exact Kaggle layout, built from real anatomy (FreeSurfer's fsaverage, fsaverage_xhemi).

Each case is the real fsaverage T1 brought to the BraTS grid — 240 × 240 × 155 voxels of 1 mm, LPS voxel order
with the affine of the SRI24 atlas every BraTS volume carries (``diag(-1, -1, 1)``, origin ``(0, 239, 0)``) — by
reorienting FreeSurfer's 1 mm LIA grid and cropping around the brain (no interpolation), skull-stripped like
BraTS (FreeSurfer's brain mask restricted to 2 mm around the aseg brain). Four sequences follow from the real
T1 and the aseg tissue classes: ``t1`` the T1 itself; ``t1ce`` the T1 with contrast in the choroid plexus;
``t2`` inverted T1 contrast with bright CSF; ``flair`` the same with CSF suppressed. A synthetic glioma per
case, at its own position and size in cerebral white matter, is an irregular necrotic core (label 1: dark on
T1 and T1ce, bright on T2), an enhancing rim (4: bright on T1ce) and oedema (2: bright on T2 and brightest on
FLAIR, slightly dark on T1). Sequences get their own gain, bias field and noise, and are stored as int16
(background exactly 0), labels as uint8 with values {0, 1, 2, 4}: our understanding of the Kaggle files' dtypes,
not checked against a download here (the affine is the SRI24 header nibabel reports); the loaders accept any dtype.

``name_mapping.csv`` / ``survival_info.csv`` (training) and ``name_mapping_validation_data.csv`` /
``survival_evaluation.csv`` (validation) sit beside the case folders as in the download, with the column
names as we know them and made-up rows.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

SHAPE = (240, 240, 155)
AFFINE = np.array([[-1.0, 0, 0, -0.0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
"""The SRI24 grid of every BraTS volume (as nibabel reports it): LPS voxel axes, 1 mm."""

TRAINING = ("BraTS2020_TrainingData", "MICCAI_BraTS2020_TrainingData")
VALIDATION = ("BraTS2020_ValidationData", "MICCAI_BraTS2020_ValidationData")
ODD_LABEL = {355: "W39_1998.09.19_Segm"}
"""Case 355's label map has this name in the real release."""

CSF = (4, 5, 14, 15, 24, 31, 43, 44, 63, 72)
WHITE = (2, 7, 16, 28, 41, 46, 60, 77, 85, 251, 252, 253, 254, 255)
CEREBRAL_WHITE = (2, 41)
CHOROID = (31, 63)


def _lps_box(volume: np.ndarray, affine: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``volume`` reoriented to LPS and cut (or zero-padded) to :data:`SHAPE` around ``centre`` (LPS voxels)."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt("LPS")
    )
    lps = nib.orientations.apply_orientation(volume, transform)
    out = np.zeros(SHAPE, dtype=lps.dtype)
    starts = np.round(centre - np.asarray(SHAPE) / 2).astype(int)
    src = tuple(slice(max(s, 0), min(s + n, m)) for s, n, m in zip(starts, SHAPE, lps.shape))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, starts))
    out[dst] = lps[src]
    return out


@functools.lru_cache(maxsize=4)
def anatomy(subject: str) -> dict[str, np.ndarray]:
    """``t1`` (float32), ``brain`` (bool), ``aseg`` (int16) and ``depth`` (mm inside the brain) on the BraTS grid."""
    mri = Path(subject) / "mri"
    t1_image = nib.load(str(mri / "T1.mgz"))
    t1 = np.asarray(t1_image.dataobj, dtype=np.float32)
    aseg = np.asarray(nib.load(str(mri / "aseg.mgz")).dataobj).astype(np.int16)
    mask = np.asarray(nib.load(str(mri / "brainmask.mgz")).dataobj) > 0
    brain = mask & ndi.binary_dilation(aseg > 0, iterations=2)
    orient = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(t1_image.affine), nib.orientations.axcodes2ornt("LPS")
    )
    lps_brain = nib.orientations.apply_orientation(aseg > 0, orient)
    found = np.argwhere(lps_brain)
    centre = (found.min(0) + found.max(0) + 1) / 2
    out = {
        "t1": _lps_box(t1, t1_image.affine, centre),
        "brain": _lps_box(brain, t1_image.affine, centre),
        "aseg": _lps_box(aseg, t1_image.affine, centre),
    }
    out["t1"][~out["brain"]] = 0
    out["aseg"][~out["brain"]] = 0
    # depth (mm to the brain's edge) on a 2 mm grid: only used to keep tumour centres away from the edge
    coarse = ndi.distance_transform_edt(out["brain"][::2, ::2, ::2]) * 2
    out["depth"] = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(np.float32)
    found = np.argwhere(out["brain"])
    out["box"] = tuple(slice(int(a), int(b) + 1) for a, b in zip(found.min(0), found.max(0)))
    return out


def _profiles(rng: np.random.Generator, shape: Sequence[int]) -> list[np.ndarray]:
    """One smooth random profile in [-1, 1] per axis (a cosine of random phase, 1 to 2.5 half-periods)."""
    return [
        np.cos(np.linspace(0, np.pi, n) * rng.uniform(1, 2.5) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        for n in shape
    ]


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], terms: int = 3) -> np.ndarray:
    """A smooth random 3D field in [-1, 1]: a sum of separable products of cosine profiles."""
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(terms):
        x, y, z = _profiles(rng, shape)
        field += rng.uniform(-1, 1) * x[:, None, None] * y[None, :, None] * z[None, None, :]
    return field / max(float(np.abs(field).max()), 1e-6)


def _bias(rng: np.random.Generator, shape: Sequence[int], strength: float = 0.1) -> np.ndarray:
    """A smooth multiplicative bias field, ``exp(strength · (gx + gy + gz))``, as one outer product."""
    x, y, z = (np.exp(strength * p) for p in _profiles(rng, shape))
    return x[:, None, None] * y[None, :, None] * z[None, None, :]


def tumour_labels(anat: dict[str, np.ndarray], rng: np.random.Generator, size: float = 1.0) -> np.ndarray:
    """A glioma (uint8 labels 1 core, 4 enhancing rim, 2 oedema) centred in cerebral white matter.

    ``size`` scales every radius (core 3–8 mm, rim 2–4 mm thick, oedema 6–16 mm beyond the rim, times ``size``).
    """
    core, rim, oedema = rng.uniform(3, 8) * size, rng.uniform(2, 4) * size, rng.uniform(6, 16) * size
    reach = core + rim + oedema
    aseg, depth = anat["aseg"], anat["depth"]
    candidates = np.argwhere(np.isin(aseg, CEREBRAL_WHITE) & (depth > min(core + rim, 25) + 4))
    centre = candidates[rng.integers(len(candidates))]
    axes = rng.uniform(0.75, 1.3, 3)
    half = int(np.ceil(reach * axes.max() * 1.3)) + 2
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, SHAPE)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grid = np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
    radius = np.sqrt(sum((g / s) ** 2 for g, s in zip(grid, axes)))
    radius = radius * (1 + 0.25 * _smooth_field(rng, radius.shape))  # irregular borders
    inside = anat["brain"][box] & ~np.isin(aseg[box], CSF)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    local = np.zeros(radius.shape, dtype=np.uint8)
    local[(radius < reach) & inside] = 2
    local[(radius < core + rim) & anat["brain"][box]] = 4
    local[radius < core] = 1
    local[~anat["brain"][box]] = 0
    labels[box] = local
    return labels


def synthesise(anat: dict[str, np.ndarray], labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The four sequences (int16, background 0) of a brain with a tumour ``labels``."""
    box = anat["box"]  # work on the brain's bounding box only; the rest is background
    t1, brain, aseg, tumour = anat["t1"][box], anat["brain"][box], anat["aseg"][box], labels[box]
    fluid = np.clip((70.0 - t1) / 30.0, 0, 1) * brain  # CSF-likeness from the real T1: 1 at CSF, 0 from GM up
    fluid = np.maximum(fluid, np.isin(aseg, CSF) * np.float32(0.8))
    inverted = np.clip(150.0 - t1, 0, None)
    base = {
        "t1": t1.copy(),
        "t1ce": t1 + np.float32(60.0) * np.isin(aseg, CHOROID),
        "t2": inverted + np.float32(140.0) * fluid,
        "flair": inverted * (1 - np.float32(0.8) * fluid) + np.float32(10.0),
    }
    white = 110.0
    # per label, per sequence: the tissue's intensity relative to white matter on the T1 scale
    levels = {
        1: {"t1": 0.35, "t1ce": 0.4, "t2": 2.1, "flair": 0.9},
        4: {"t1": 0.7, "t1ce": 1.9, "t2": 1.2, "flair": 1.4},
        2: {"t1": 0.75, "t1ce": 0.8, "t2": 1.6, "flair": 1.9},
    }
    found = np.argwhere(tumour > 0)
    near = tuple(slice(max(a - 4, 0), b + 5) for a, b in zip(found.min(0), found.max(0)))
    for value, by_sequence in levels.items():
        region = ndi.gaussian_filter((tumour[near] == value).astype(np.float32), 0.7)
        for name, level in by_sequence.items():
            texture = 1 + 0.08 * rng.standard_normal(region.shape, dtype=np.float32) if value != 2 else 1.0
            base[name][near] = base[name][near] * (1 - region) + region * np.float32(level * white) * texture
    out = {}
    for name, image in base.items():
        gain = np.float32(rng.uniform(3.0, 6.0))
        noisy = image * _bias(rng, image.shape) + 2.0 * rng.standard_normal(image.shape, dtype=np.float32)
        noisy = np.clip(noisy * gain, 1, None) * brain
        full = np.zeros(SHAPE, dtype=np.int16)
        full[box] = np.rint(noisy)
        out[name] = full
    return out


def _write(path: Path, data: np.ndarray) -> None:
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(AFFINE, code=1)
    image.set_sform(AFFINE, code=1)
    nib.save(image, str(path))


def write_case(
    folder: Path,
    case: str,
    anat: dict[str, np.ndarray],
    rng: np.random.Generator,
    label_name: str | None = None,
    with_label: bool = True,
    suffix: str = ".nii",
    size: float = 1.0,
) -> Path:
    """``folder/<case>/<case>_{t1,t1ce,t2,flair}`` (+ ``_seg`` or ``label_name``) ``+ suffix``; returns the folder."""
    labels = tumour_labels(anat, rng, size)
    images = synthesise(anat, labels, rng)
    case_dir = folder / case
    case_dir.mkdir(parents=True, exist_ok=True)
    for name in ("flair", "t1", "t1ce", "t2"):
        _write(case_dir / f"{case}_{name}{suffix}", images[name])
    if with_label:
        _write(case_dir / f"{label_name or f'{case}_seg'}{suffix}", labels)
    return case_dir


def _numbers(cases: int | Sequence[int]) -> list[int]:
    return list(range(1, cases + 1)) if isinstance(cases, int) else [int(n) for n in cases]


def make_brats2020(
    root: Path,
    freesurfer: Path,
    training: int | Sequence[int] = 2,
    validation: int | Sequence[int] = 1,
    include_355: bool = False,
    compress: bool = False,
    seed: int = 0,
    size: float = 1.3,
) -> Path:
    """The Kaggle download under ``root`` (``BraTS2020_TrainingData/...`` and ``BraTS2020_ValidationData/...``).

    Args:
        root: where to write.
        freesurfer: the folder holding ``fsaverage`` and ``fsaverage_xhemi`` (cases alternate between them).
        training: number of training cases (numbered from 001) or their numbers.
        validation: likewise for validation cases (no label maps).
        include_355: add training case 355 with its label map named ``W39_1998.09.19_Segm``.
        compress: write ``.nii.gz`` (CBICA's download) instead of ``.nii`` (Kaggle's).
        seed: seed of tumours, gains, bias fields and noise.
        size: scale of the tumours (1.3: whole tumours of roughly 50–150 cm³, BraTS's typical range).
    """
    subjects = [str(Path(freesurfer) / name) for name in ("fsaverage", "fsaverage_xhemi")]
    suffix = ".nii.gz" if compress else ".nii"
    splits = (
        (TRAINING, "Training", _numbers(training) + ([355] if include_355 else []), True),
        (VALIDATION, "Validation", _numbers(validation), False),
    )
    for (outer, inner), kind, numbers, labelled in splits:
        folder = Path(root) / outer / inner
        folder.mkdir(parents=True, exist_ok=True)
        for index, number in enumerate(numbers):
            rng = np.random.default_rng([seed, number, labelled])
            case = f"BraTS20_{kind}_{number:03d}"
            label_name = ODD_LABEL.get(number) if labelled else None
            write_case(folder, case, anatomy(subjects[index % 2]), rng, label_name, labelled, suffix, size)
        ids = [f"BraTS20_{kind}_{n:03d}" for n in numbers]
        if labelled:
            mapping = [
                "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,"
                "BraTS_2019_subject_ID,BraTS_2020_subject_ID"
            ]
            mapping += [f"HGG,NA,NA,NA,NA,{i}" for i in ids]
            survival = ["Brats20ID,Age,Survival_days,Extent_of_Resection"]
            survival += [f"{i},{50 + k}.5,{300 + 10 * k},GTR" for k, i in enumerate(ids)]
            (folder / "name_mapping.csv").write_text("\n".join(mapping) + "\n")
            (folder / "survival_info.csv").write_text("\n".join(survival) + "\n")
        else:
            mapping = [
                "BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,"
                "BraTS_2019_subject_ID,BraTS_2020_subject_ID"
            ]
            mapping += [f"NA,NA,NA,NA,{i}" for i in ids]
            survival = ["BraTS20ID,Age,ResectionStatus"] + [f"{i},{60 + k}.0,GTR" for k, i in enumerate(ids)]
            (folder / "name_mapping_validation_data.csv").write_text("\n".join(mapping) + "\n")
            (folder / "survival_evaluation.csv").write_text("\n".join(survival) + "\n")
    return Path(root)


def make_mask_task(root: Path, freesurfer: Path, margin: int = 6) -> Path:
    """A second, binary task for fine-tuning: lateral ventricles on T1, ``images/<id>.nii.gz`` + ``masks/<id>.nii.gz``.

    The cases are FreeSurfer's own T1 of fsaverage (not skull-stripped, uint8) cropped to the lateral ventricles
    (aseg 4 and 43) plus ``margin`` voxels, in FreeSurfer's LIA voxel order at 1 mm — unlike BraTS, neither LPS
    nor skull-stripped, as a user's own task would be — and its mirror image (``fsaverage_xhemi``, whose volumes
    are fsaverage's own, is mirrored left-right here to make a second brain).
    """
    images, masks = Path(root) / "images", Path(root) / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for name in ("fsaverage", "fsaverage_xhemi"):
        mri = Path(freesurfer) / name / "mri"
        t1 = nib.load(str(mri / "T1.mgz"))
        aseg = np.asarray(nib.load(str(mri / "aseg.mgz")).dataobj)
        ventricles = np.isin(aseg, (4, 43))
        found = np.argwhere(ventricles)
        low = np.maximum(found.min(0) - margin, 0)
        high = np.minimum(found.max(0) + margin + 1, ventricles.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
        affine = t1.affine.copy()
        affine[:3, 3] = t1.affine[:3, :3] @ low + t1.affine[:3, 3]
        image, mask = np.asarray(t1.dataobj)[box], ventricles[box].astype(np.uint8)
        if name.endswith("xhemi"):
            image, mask = image[::-1], mask[::-1]
        nib.save(nib.Nifti1Image(np.ascontiguousarray(image), affine), str(images / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(np.ascontiguousarray(mask), affine), str(masks / f"{name}.nii.gz"))
    return Path(root)
