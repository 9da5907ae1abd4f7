"""MICCAI 2012 Multi-Atlas Labeling (OASIS T1s, Neuromorphometrics labels) and DeepNAT's 25 structures.

Layout of the challenge release (``MICCAI-2012-Multi-Atlas-Challenge-Data``)::

    training-images/<id>_3.nii(.gz)      training-labels/<id>_3_glm.nii(.gz)     15 subjects
    testing-images/<id>_3.nii(.gz)       testing-labels/<id>_3_glm.nii(.gz)      20 subjects

Labels are Neuromorphometrics ids: subcortical structures below 100 (right and left with their own ids) and
cortical parcels from 100 up (even = right, odd = left). DeepNAT segments 25 structures; its cerebral grey
matter is the union of the cortical parcels — *not* the ids 42/43 ("Cerebral Exterior"), which hold only a
few voxels in the challenge data.

For users without the challenge data, :class:`FreeSurferStructures` maps FreeSurfer ``aseg``/``aparc+aseg``
label maps to the same 25 structures, and :data:`FREESURFER_TO_NEUROMORPHOMETRICS` writes them in
Neuromorphometrics ids (an approximate correspondence for the cortical parcels, exact for the rest).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_dst_type
from scipy import ndimage

from neurobundles.data.folders import image_datalist
from neurobundles.data.freesurfer import check_pair, freesurfer_datalist
from neurobundles.filenames import MASK_SUFFIX, beside, image_stem

__all__ = [
    "CEREBRAL_GM_IDS",
    "CLASS_NAMES",
    "FREESURFER_NEAREST_WM",
    "FREESURFER_TO_NEUROMORPHOMETRICS",
    "FREESURFER_TO_STRUCTURE",
    "LAYOUTS",
    "NEUROMORPHOMETRICS",
    "OUTPUT_IDS",
    "STRUCTURES",
    "TESTING_IDS",
    "TRAINING_IDS",
    "BrainMaskFromLabels",
    "BrainMaskFromLabelsd",
    "FreeSurferStructures",
    "FreeSurferStructuresd",
    "NeuromorphometricsStructures",
    "StructureClassesd",
    "brain_mask_from_labels",
    "deepnat_datalist",
    "deepnat_inputs",
    "freesurfer_to_neuromorphometrics",
    "label_table",
    "miccai2012_datalist",
    "structure_map",
    "write_label_table",
]

TRAINING_IDS: tuple[str, ...] = (
    "1000", "1001", "1002", "1006", "1007", "1008", "1009", "1010",
    "1011", "1012", "1013", "1014", "1015", "1017", "1036",
)  # fmt: skip
"""The 15 training subjects of the challenge."""

TESTING_IDS: tuple[str, ...] = (
    "1003", "1004", "1005", "1018", "1019", "1023", "1024", "1025", "1038", "1039",
    "1101", "1104", "1107", "1110", "1113", "1116", "1119", "1122", "1125", "1128",
)  # fmt: skip
"""The 20 testing subjects: the other 20 of the release's 35 OASIS ids (1023–1025, 1038, 1039 are second scans).

From the public list of the 35 ids and the 15 training ids; the datalist itself reads whatever ids the folders
hold, so a release that differs still loads."""

SPLIT_FOLDERS = {"training": ("training-images", "training-labels"), "testing": ("testing-images", "testing-labels")}

_SUBCORTICAL = {
    4: "3rd Ventricle", 11: "4th Ventricle", 23: "Right Accumbens Area", 30: "Left Accumbens Area",
    31: "Right Amygdala", 32: "Left Amygdala", 35: "Brain Stem", 36: "Right Caudate", 37: "Left Caudate",
    38: "Right Cerebellum Exterior", 39: "Left Cerebellum Exterior", 40: "Right Cerebellum White Matter",
    41: "Left Cerebellum White Matter", 42: "Right Cerebral Exterior", 43: "Left Cerebral Exterior",
    44: "Right Cerebral White Matter", 45: "Left Cerebral White Matter", 46: "CSF", 47: "Right Hippocampus",
    48: "Left Hippocampus", 49: "Right Inf Lat Vent", 50: "Left Inf Lat Vent", 51: "Right Lateral Ventricle",
    52: "Left Lateral Ventricle", 55: "Right Pallidum", 56: "Left Pallidum", 57: "Right Putamen",
    58: "Left Putamen", 59: "Right Thalamus Proper", 60: "Left Thalamus Proper", 61: "Right Ventral DC",
    62: "Left Ventral DC", 63: "Right vessel", 64: "Left vessel", 69: "Optic Chiasm",
    71: "Cerebellar Vermal Lobules I-V", 72: "Cerebellar Vermal Lobules VI-VII",
    73: "Cerebellar Vermal Lobules VIII-X", 75: "Left Basal Forebrain", 76: "Right Basal Forebrain",
}  # fmt: skip
_PARCELS = {
    100: "ACgG anterior cingulate gyrus", 102: "AIns anterior insula", 104: "AOrG anterior orbital gyrus",
    106: "AnG angular gyrus", 108: "Calc calcarine cortex", 112: "CO central operculum", 114: "Cun cuneus",
    116: "Ent entorhinal area", 118: "FO frontal operculum", 120: "FRP frontal pole", 122: "FuG fusiform gyrus",
    124: "GRe gyrus rectus", 128: "IOG inferior occipital gyrus", 132: "ITG inferior temporal gyrus",
    134: "LiG lingual gyrus", 136: "LOrG lateral orbital gyrus", 138: "MCgG middle cingulate gyrus",
    140: "MFC medial frontal cortex", 142: "MFG middle frontal gyrus", 144: "MOG middle occipital gyrus",
    146: "MOrG medial orbital gyrus", 148: "MPoG postcentral gyrus medial segment",
    150: "MPrG precentral gyrus medial segment", 152: "MSFG superior frontal gyrus medial segment",
    154: "MTG middle temporal gyrus", 156: "OCP occipital pole", 160: "OFuG occipital fusiform gyrus",
    162: "OpIFG opercular part of the inferior frontal gyrus",
    164: "OrIFG orbital part of the inferior frontal gyrus", 166: "PCgG posterior cingulate gyrus",
    168: "PCu precuneus", 170: "PHG parahippocampal gyrus", 172: "PIns posterior insula",
    174: "PO parietal operculum", 176: "PoG postcentral gyrus", 178: "POrG posterior orbital gyrus",
    180: "PP planum polare", 182: "PrG precentral gyrus", 184: "PT planum temporale",
    186: "SCA subcallosal area", 190: "SFG superior frontal gyrus", 192: "SMC supplementary motor cortex",
    194: "SMG supramarginal gyrus", 196: "SOG superior occipital gyrus", 198: "SPL superior parietal lobule",
    200: "STG superior temporal gyrus", 202: "TMP temporal pole",
    204: "TrIFG triangular part of the inferior frontal gyrus", 206: "TTG transverse temporal gyrus",
}  # fmt: skip
NEUROMORPHOMETRICS: dict[int, str] = {
    **_SUBCORTICAL,
    **{right + side: f"{'Left' if side else 'Right'} {name}" for right, name in _PARCELS.items() for side in (0, 1)},
}
"""Neuromorphometrics ids and names of the challenge labels (parcels ≥ 100: even = right, odd = left)."""

MAX_LABEL_ID = 255
"""Largest id the mappings cover (the challenge's largest is 207)."""

CEREBRAL_GM_IDS: tuple[int, int] = (209, 208)
"""Ids written for left/right cerebral grey matter. Neuromorphometrics has no single id for it (its parcels
are the grey matter); 208/209 follow its parcel rule (≥ 100, even = right) and are unused by it, so a label
map we write reads back through :func:`structure_map` unchanged."""

STRUCTURES: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("Left-Cerebral-White-Matter", 45, (45,)),
    ("Right-Cerebral-White-Matter", 44, (44,)),
    ("Left-Cerebral-Gray-Matter", CEREBRAL_GM_IDS[0], tuple(range(101, MAX_LABEL_ID + 1, 2))),
    ("Right-Cerebral-Gray-Matter", CEREBRAL_GM_IDS[1], tuple(range(100, MAX_LABEL_ID + 1, 2))),
    ("Left-Cerebellum-Exterior", 39, (39,)),
    ("Right-Cerebellum-Exterior", 38, (38,)),
    ("Left-Cerebellum-White-Matter", 41, (41,)),
    ("Right-Cerebellum-White-Matter", 40, (40,)),
    ("Left-Amygdala", 32, (32,)),
    ("Right-Amygdala", 31, (31,)),
    ("Left-Caudate", 37, (37,)),
    ("Right-Caudate", 36, (36,)),
    ("Left-Hippocampus", 48, (48,)),
    ("Right-Hippocampus", 47, (47,)),
    ("Left-Lateral-Ventricle", 52, (52,)),
    ("Right-Lateral-Ventricle", 51, (51,)),
    ("Left-Pallidum", 56, (56,)),
    ("Right-Pallidum", 55, (55,)),
    ("Left-Putamen", 58, (58,)),
    ("Right-Putamen", 57, (57,)),
    ("Left-Thalamus-Proper", 60, (60,)),
    ("Right-Thalamus-Proper", 59, (59,)),
    ("Left-Ventral-DC", 62, (62,)),
    ("Right-Ventral-DC", 61, (61,)),
    ("Brain-Stem", 35, (35,)),
)
"""DeepNAT's 25 structures as classes 1..25: name, the id written for it, the Neuromorphometrics ids it gathers."""

CLASS_NAMES: tuple[str, ...] = ("background", *(name for name, _, _ in STRUCTURES))
"""Class index → name (stage 2's 26 outputs; the bundle's ``channel_def``)."""

OUTPUT_IDS: tuple[int, ...] = (0, *(value for _, value, _ in STRUCTURES))
"""Class index → the label value written (Neuromorphometrics ids; 208/209 for cerebral grey matter)."""

_COLOURS: dict[str, tuple[int, int, int]] = {
    "Cerebral-White-Matter": (245, 245, 245),
    "Cerebral-Gray-Matter": (205, 62, 78),
    "Cerebellum-Exterior": (230, 148, 34),
    "Cerebellum-White-Matter": (220, 248, 164),
    "Amygdala": (103, 255, 255),
    "Caudate": (122, 186, 220),
    "Hippocampus": (220, 216, 20),
    "Lateral-Ventricle": (120, 18, 134),
    "Pallidum": (12, 48, 255),
    "Putamen": (236, 13, 176),
    "Thalamus-Proper": (0, 118, 14),
    "Ventral-DC": (165, 42, 42),
    "Brain-Stem": (119, 159, 176),
}
"""FreeSurfer's colours for the same structures."""


def structure_map() -> dict[int, int]:
    """Neuromorphometrics id → class 1..25 (every other id, 42/43 included, is background)."""
    return {source: index for index, (_, _, sources) in enumerate(STRUCTURES, 1) for source in sources}


def label_table() -> str:
    """The output label table in FreeSurfer colour-table form (``id name R G B A``), one line per class."""
    lines = ["#No. Label Name:                            R   G   B   A", f"{0:<5}{'Unknown':<40}0   0   0   0"]
    for name, value, _ in STRUCTURES:
        red, green, blue = _COLOURS[name.removeprefix("Left-").removeprefix("Right-")]
        lines.append(f"{value:<5}{name:<40}{red:<4}{green:<4}{blue:<4}0")
    return "\n".join(lines) + "\n"


def write_label_table(path: str | Path) -> Path:
    """Write :func:`label_table` (the bundle's ``configs/labels.txt``)."""
    path = Path(path)
    path.write_text(label_table())
    return path


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def miccai2012_datalist(
    root: str | Path, split: str = "training", ids: Sequence[str] | None = None, labels: bool = True
) -> list[dict[str, str]]:
    """Items ``{"image", "label", "id"}`` of one split (``"training"``, ``"testing"`` or ``"all"``), by id.

    Args:
        root: the release folder holding ``training-images`` etc.
        split: which folders to read.
        ids: subject ids to take (error if one is missing); default every ``<id>_3.nii(.gz)`` in the images
            folder(s), so the list follows the data rather than :data:`TRAINING_IDS`/:data:`TESTING_IDS`.
        labels: attach ``<id>_3_glm.nii(.gz)`` (checked to lie on the image's grid).
    """
    root = Path(root)
    if split not in (*SPLIT_FOLDERS, "all"):
        raise ValueError(f"split must be 'training', 'testing' or 'all', got {split!r}.")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: MICCAI 2012 folder not found (expected training-images/, training-labels/).")
    folders = {name: SPLIT_FOLDERS[name] for name in (SPLIT_FOLDERS if split == "all" else (split,))}
    if not any((root / images).is_dir() for images, _ in folders.values()):
        wanted = " or ".join(images for images, _ in folders.values())
        raise FileNotFoundError(f"{root}: no {wanted} folder; is this the MICCAI 2012 release folder?")
    items = []
    for image_folder, label_folder in folders.values():
        image_dir, label_dir = root / image_folder, root / label_folder
        if not image_dir.is_dir():
            continue
        for image in sorted(image_dir.iterdir(), key=lambda p: p.name):
            subject, _, rest = image.name.partition("_")
            if rest not in ("3.nii", "3.nii.gz") or (ids is not None and subject not in ids):
                continue
            item = {"image": str(image), "id": subject}
            if labels:
                label = _find(label_dir, f"{subject}_3_glm")
                if label is None:
                    raise FileNotFoundError(f"{label_dir}: no {subject}_3_glm.nii(.gz) for {image}.")
                check_pair(image, label)
                item["label"] = str(label)
            items.append(item)
    missing = sorted(set(ids or ()) - {item["id"] for item in items})
    if missing:
        raise FileNotFoundError(f"{root}: no <id>_3.nii(.gz) image for subject(s) {', '.join(missing)} ({split}).")
    if not items:
        raise FileNotFoundError(f"{root}: no <id>_3.nii(.gz) images in the {split} folder(s).")
    return items


def brain_mask_from_labels(labels: np.ndarray, closing: int = 2) -> np.ndarray:
    """The region DeepNAT's first stage works in: every labelled voxel, closed by ``closing`` voxels and filled.

    Manual labels cover the brain with small gaps (sulcal CSF without a label); closing and filling turns them
    into one solid mask without reaching into the skull.
    """
    inside = np.asarray(labels) > 0
    if closing > 0:
        structure = ndimage.generate_binary_structure(3, 1)
        padded = np.pad(inside, closing)
        padded = ndimage.binary_closing(padded, structure, iterations=closing)
        inside = padded[closing:-closing, closing:-closing, closing:-closing]
    return ndimage.binary_fill_holes(inside)


class BrainMaskFromLabels(Transform):
    """Label map (any ids) → brain mask (same shape, 0/1), see :func:`brain_mask_from_labels`."""

    def __init__(self, closing: int = 2) -> None:
        self.closing = closing

    def __call__(self, labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        mask = np.stack([brain_mask_from_labels(channel, self.closing) for channel in values])
        return convert_to_dst_type(mask.astype(np.float32), labels, dtype=torch.float32)[0]


class BrainMaskFromLabelsd(MapTransform):
    """Dictionary version of :class:`BrainMaskFromLabels`: adds ``mask_key`` from the label map under ``keys``."""

    def __init__(
        self, keys: KeysCollection, mask_key: str = "mask", closing: int = 2, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.transform = BrainMaskFromLabels(closing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.mask_key] = self.transform(d[key])
        return d


# --- FreeSurfer ---------------------------------------------------------------------------------------------

FREESURFER_TO_STRUCTURE: dict[int, int] = {
    2: 1, 41: 2,  # cerebral white matter
    3: 3, 42: 4, **{i: 3 for i in range(1000, 1036)}, **{i: 4 for i in range(2000, 2036)},  # cortex / parcels
    8: 5, 47: 6, 7: 7, 46: 8,  # cerebellum cortex, white matter
    18: 9, 54: 10, 11: 11, 50: 12, 17: 13, 53: 14,  # amygdala, caudate, hippocampus
    4: 15, 43: 16, 31: 15, 63: 16,  # lateral ventricles (choroid plexus inside them, as manual labels draw it)
    13: 17, 52: 18, 12: 19, 51: 20, 10: 21, 49: 22, 28: 23, 60: 24, 16: 25,
}  # fmt: skip
"""FreeSurfer id (``aseg`` or ``aparc+aseg``) → DeepNAT class. FreeSurfer's 3/42 are cortex (Neuromorphometrics'
42/43 are not: the id spaces differ)."""

FREESURFER_NEAREST_WM: tuple[int, ...] = (77, 251, 252, 253, 254, 255)
"""FreeSurfer ids without a hemisphere that Neuromorphometrics counts as cerebral white matter (white-matter
hypointensities, corpus callosum): they take the hemisphere of the nearest cerebral white-matter voxel."""

_DK_TO_PARCEL = {
    0: 140, 1: 200, 2: 100, 3: 142, 4: 186, 5: 114, 6: 116, 7: 122, 8: 106, 9: 132, 10: 166, 11: 144,
    12: 136, 13: 134, 14: 146, 15: 154, 16: 170, 17: 150, 18: 162, 19: 164, 20: 204, 21: 108, 22: 176,
    23: 138, 24: 182, 25: 168, 26: 100, 27: 142, 28: 190, 29: 198, 30: 200, 31: 194, 32: 120, 33: 202,
    34: 206, 35: 102,
}  # fmt: skip
"""Desikan-Killiany region (aparc ``ctx-?h-`` id − 1000/2000) → nearest Neuromorphometrics parcel (right id).
Approximate: the two protocols draw different borders; only the hemisphere and 'cortex' are exact."""

FREESURFER_TO_NEUROMORPHOMETRICS: dict[int, int] = {
    2: 45, 41: 44, 4: 52, 43: 51, 5: 50, 44: 49, 7: 41, 46: 40, 8: 39, 47: 38, 10: 60, 49: 59,
    11: 37, 50: 36, 12: 58, 51: 57, 13: 56, 52: 55, 14: 4, 15: 11, 16: 35, 17: 48, 53: 47, 18: 32, 54: 31,
    24: 46, 26: 30, 58: 23, 28: 62, 60: 61, 30: 64, 62: 63, 31: 52, 63: 51, 85: 69,
    **{1000 + region: parcel + 1 for region, parcel in _DK_TO_PARCEL.items()},
    **{2000 + region: parcel for region, parcel in _DK_TO_PARCEL.items()},
}  # fmt: skip
"""FreeSurfer ``aparc+aseg`` id → Neuromorphometrics id (unlisted ids → 0; see :data:`FREESURFER_NEAREST_WM`)."""


def _nearest_white_matter(labels: np.ndarray, values: np.ndarray, left: int, right: int) -> np.ndarray:
    """``values`` where ``labels`` is one of :data:`FREESURFER_NEAREST_WM` set to the nearest of ``left``/``right``
    white matter (``labels`` 2/41). Works in the box around those voxels (plus a margin) when WM lies there."""
    todo = np.isin(labels, FREESURFER_NEAREST_WM)
    if not todo.any():
        return values
    points = np.argwhere(todo)
    margin = 8
    low = np.maximum(points.min(0) - margin, 0)
    high = np.minimum(points.max(0) + margin + 1, labels.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    white = np.isin(labels[box], (2, 41))
    if not white.any():
        box = (slice(None),) * 3
        white = np.isin(labels, (2, 41))
        if not white.any():
            return values
    _, nearest = ndimage.distance_transform_edt(~white, return_indices=True)
    inside = todo[box]
    source = labels[box][tuple(index[inside] for index in nearest)]
    values[box][inside] = np.where(source == 2, left, right)
    return values


def _lookup(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    table = np.zeros(max(max(mapping), int(labels.max(initial=0))) + 1, dtype=np.int64)
    for source, target in mapping.items():
        table[source] = target
    ids = np.rint(labels).astype(np.int64)
    return np.where(ids >= 0, table[np.clip(ids, 0, None)], 0)


def freesurfer_to_neuromorphometrics(labels: np.ndarray) -> np.ndarray:
    """A FreeSurfer ``aparc+aseg`` map in Neuromorphometrics ids (int16), corpus callosum in the nearest hemisphere."""
    labels = np.asarray(labels)
    out = _lookup(labels, FREESURFER_TO_NEUROMORPHOMETRICS)
    return _nearest_white_matter(np.rint(labels).astype(np.int64), out, 45, 44).astype(np.int16)


class NeuromorphometricsStructures(Transform):
    """Neuromorphometrics label map (the MICCAI 2012 labels) → DeepNAT class indices 0..25 (same type and shape),
    by :func:`structure_map`; every other id, 42/43 included, becomes background."""

    def __call__(self, labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        out = _lookup(values, structure_map())
        if isinstance(labels, np.ndarray):
            return out.astype(labels.dtype.newbyteorder("="))
        return convert_to_dst_type(out, labels)[0]


class FreeSurferStructures(Transform):
    """FreeSurfer ``aseg``/``aparc+aseg`` label map → DeepNAT class indices 0..25 (same type and shape).

    Corpus callosum and white-matter hypointensities join the nearest hemisphere's cerebral white matter.
    """

    def __call__(self, labels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        ids = np.rint(values).astype(np.int64)
        volumes = ids.reshape(-1, *ids.shape[-3:])
        out = np.stack([_nearest_white_matter(v, _lookup(v, FREESURFER_TO_STRUCTURE), 1, 2) for v in volumes])
        if isinstance(labels, np.ndarray):  # same type, native byte order (FreeSurfer's .mgz are big-endian)
            return out.reshape(ids.shape).astype(labels.dtype.newbyteorder("="))
        return convert_to_dst_type(out.reshape(ids.shape), labels)[0]


class FreeSurferStructuresd(MapTransform):
    """Dictionary version of :class:`FreeSurferStructures`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = FreeSurferStructures()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


# --- bundle datalists -----------------------------------------------------------------------------------------

LAYOUTS = ("miccai2012", "freesurfer")
"""Training data DeepNAT's bundle reads: the MICCAI 2012 release, or FreeSurfer subjects (``aparc+aseg``)."""


def deepnat_datalist(root: str | Path, layout: str = "miccai2012", split: str = "training") -> list[dict[str, str]]:
    """Labelled items ``{"image", "label", "id"}`` from a MICCAI 2012 release folder (``split``: ``"training"``,
    ``"testing"`` or ``"all"``) or a FreeSurfer subjects folder (``orig.mgz`` with ``aparc+aseg.mgz``; ``split``
    is ignored: split the subjects with :func:`neurobundles.data.splits.split_datalist`)."""
    if layout == "miccai2012":
        return miccai2012_datalist(root, split)
    if layout == "freesurfer":
        return freesurfer_datalist(root, image=("orig.mgz", "T1.mgz"), label="aparc+aseg.mgz")
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")


def deepnat_inputs(
    inputs: str | Path | Sequence[str | Path],
    recursive: bool = False,
    exclude: Sequence[str | Path] = (),
    mask_suffix: str = MASK_SUFFIX,
) -> list[dict[str, str]]:
    """Images to segment, ``{"image", "id"}``, each with ``"mask"`` when ``<stem><mask_suffix>.nii(.gz)`` lies
    beside it (a brain mask on the image's grid); the mask files themselves are not inputs."""
    found = image_datalist(inputs, recursive, exclude)
    items = [item for item in found if not image_stem(item["image"]).endswith(mask_suffix)]
    for item in items:
        mask = beside(item["image"], mask_suffix)
        if mask is not None:
            item["mask"] = mask
    if not items:
        raise FileNotFoundError(f"{inputs}: only brain masks (*{mask_suffix}), no image to segment.")
    return items


class StructureClassesd(MapTransform):
    """Label maps under ``keys`` → DeepNAT's class indices 0..25, from Neuromorphometrics ids (``layout``
    ``"miccai2012"``: :func:`structure_map`) or FreeSurfer ids (``"freesurfer"``: :class:`FreeSurferStructures`)."""

    def __init__(self, keys: KeysCollection, layout: str = "miccai2012", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
        self.transform = NeuromorphometricsStructures() if layout == "miccai2012" else FreeSurferStructures()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
