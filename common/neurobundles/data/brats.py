"""BraTS 2020 as Kaggle and CBICA distribute it → MONAI datalists of multi-modal cases, and seeded splits.

Layout (the Kaggle archive ``brats20-dataset-training-validation``)::

    BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData/
        BraTS20_Training_001/BraTS20_Training_001_{t1,t1ce,t2,flair,seg}.nii
        ...
        BraTS20_Training_355/BraTS20_Training_355_{t1,t1ce,t2,flair}.nii + W39_1998.09.19_Segm.nii
        name_mapping.csv, survival_info.csv
    BraTS2020_ValidationData/MICCAI_BraTS2020_ValidationData/
        BraTS20_Validation_001/BraTS20_Validation_001_{t1,t1ce,t2,flair}.nii   (no seg)

369 training and 125 validation cases; every volume 240 × 240 × 155 at 1 mm on the SRI24 grid; labels
0 background, 1 necrotic and non-enhancing core, 2 oedema, 4 enhancing tumour (no 3). ``.nii.gz`` files
(CBICA's own download) are found as well. Case 355's label map is named ``W39_1998.09.19_Segm.nii`` in the
release; it is found under that name (or under the standard one, for copies that renamed it).

Inputs to segment (:func:`brats_inputs`, what ``neurobundles segment`` and ``inference.json`` read) are cases
in any folder structure whose sequence files are named ``<case>_<sequence>.nii[.gz]``: BraTS 2020's
``_t1``/``_t1ce``/``_t2``/``_flair``, BraTS 2023's ``-t1n``/``-t1c``/``-t2w``/``-t2f`` and BIDS's
``_T1w``/``_T2w``/``_FLAIR`` alike. :class:`BratsSequencesd` completes a case from any one of its files (what
MONAI Label sends), finding the other sequences beside it.
"""

from __future__ import annotations

import contextlib
import glob
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.data.splits import save_split, split_datalist
from neurobundles.errors import InvalidImageError, reported
from neurobundles.filenames import image_stem, is_image_file

__all__ = [
    "BRATS_LABELS",
    "BRATS_MODALITIES",
    "BRATS_SHAPE",
    "LABEL_ALIASES",
    "SEED_MODALITIES",
    "SEQUENCE_NAMES",
    "BratsSequencesd",
    "brats_case",
    "brats_case_folders",
    "brats_datalist",
    "brats_inputs",
    "brats_split",
    "case_sequences",
    "sequence_of",
]

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
"""File suffixes of the four MRI sequences."""

SEED_MODALITIES = ("t1", "t2", "flair")
"""The channels MRISeg trains on (T1ce left out); add ``"t1ce"`` for a fourth channel."""

BRATS_LABELS = (0, 1, 2, 4)
"""Label values of a BraTS 2017–2020 segmentation (BraTS 2023 renumbers enhancing tumour to 3); pass them to
:class:`neurobundles.transforms.slices.WholeTumourd`, which refuses other values naming the file."""

BRATS_SHAPE = (240, 240, 155)
"""Grid of every BraTS volume (1 mm, SRI24 atlas space)."""

LABEL_ALIASES = {"BraTS20_Training_355": "W39_1998.09.19_Segm"}
"""Cases whose label map is not ``<case>_seg``: the release ships case 355's as ``W39_1998.09.19_Segm``."""

SPLIT_FOLDERS = {
    "training": ("BraTS2020_TrainingData", "MICCAI_BraTS2020_TrainingData"),
    "validation": ("BraTS2020_ValidationData", "MICCAI_BraTS2020_ValidationData"),
}
"""Outer (Kaggle) and inner (CBICA) folder of each split."""

SUFFIXES = (".nii", ".nii.gz")


def _volume(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii`` or ``folder/stem.nii.gz``; an error when both exist (which one is meant?)."""
    found = [folder / f"{stem}{suffix}" for suffix in SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one of them.")
    return found[0] if found else None


def _is_case(folder: Path) -> bool:
    return folder.is_dir() and any(_volume(folder, f"{folder.name}_{m}") for m in BRATS_MODALITIES)


def _label_file(folder: Path) -> Path | None:
    standard = _volume(folder, f"{folder.name}_seg")
    alias = LABEL_ALIASES.get(folder.name)
    return standard or (_volume(folder, alias) if alias else None)


def brats_case_folders(root: str | Path, split: str | None = "training") -> list[Path]:
    """Case folders under ``root``, sorted by name.

    Args:
        root: the Kaggle top folder (holding ``BraTS2020_TrainingData`` and/or ``BraTS2020_ValidationData``),
            one of those, the inner ``MICCAI_BraTS2020_*Data`` folder, any folder of case folders, or a single
            case folder.
        split: ``"training"`` or ``"validation"`` picks that split when ``root`` holds both; None takes every
            split found.
    """
    root = Path(root).expanduser()
    if split is not None and split not in SPLIT_FOLDERS:
        raise ValueError(f"split must be 'training', 'validation' or None, got {split!r}.")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: BraTS folder not found.")
    if _is_case(root):
        return [root]
    wanted = list(SPLIT_FOLDERS) if split is None else [split]
    containers = []
    for name in wanted:
        outer, inner = SPLIT_FOLDERS[name]
        for candidate in (root / outer / inner, root / inner):
            if candidate.is_dir():
                containers.append(candidate)
                break
    if not containers:  # the other split's outer folder, the inner folder itself, or any folder of case folders
        containers = [root / inner for _, inner in SPLIT_FOLDERS.values() if (root / inner).is_dir()] or [root]
    cases = sorted(
        (case for container in containers for case in container.iterdir() if _is_case(case)), key=lambda p: p.name
    )
    if not cases:
        where = " or ".join(str(c) for c in containers)
        raise FileNotFoundError(
            f"{where}: no BraTS case folder (<case>/<case>_flair.nii[.gz] and the other sequences) found; "
            f"pass the folder that holds {'/'.join(SPLIT_FOLDERS[split or 'training'])}, or a case folder."
        )
    return cases


def brats_case(
    folder: str | Path, modalities: Sequence[str] = SEED_MODALITIES, label: bool | None = None
) -> dict[str, object]:
    """One datalist item: ``{"id", "image": first channel's path, <modality>: path..., "label": path}``.

    ``image`` names the case's reference file (its grid is the outputs' grid, its path the cohort's record);
    :class:`BratsSequencesd` and the bundles' transforms load every modality key and stack them in
    ``modalities`` order.

    Args:
        folder: a case folder, ``<case>/<case>_<modality>.nii[.gz]``.
        modalities: channels, in order, from ``t1``, ``t1ce``, ``t2``, ``flair``.
        label: True requires the label map, False leaves it out, None (default) requires it for training
            cases (``BraTS20_Training_*``) and takes it when present otherwise.
    """
    folder = Path(folder)
    unknown = [m for m in modalities if m not in BRATS_MODALITIES]
    if unknown or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities {tuple(modalities)}: choose distinct names among {', '.join(BRATS_MODALITIES)}.")
    case = folder.name
    item: dict[str, object] = {"id": case}
    for modality in modalities:
        path = _volume(folder, f"{case}_{modality}")
        if path is None:
            raise FileNotFoundError(
                f"{folder / f'{case}_{modality}.nii'}: the {modality} volume of case {case} is missing "
                f"(looked for .nii and .nii.gz); every case needs {', '.join(modalities)}."
            )
        item[modality] = str(path)
    item["image"] = item[modalities[0]]
    if label is not False:
        seg = _label_file(folder)
        required = label is True or (label is None and "_Training_" in case)
        if seg is None and required:
            alias = f" (or {LABEL_ALIASES[case]}.nii)" if case in LABEL_ALIASES else ""
            raise FileNotFoundError(
                f"{folder / f'{case}_seg.nii'}{alias}: the label map of training case {case} is missing; "
                "restore it from the download, or list this case as unlabelled (label=False)."
            )
        if seg is not None:
            item["label"] = str(seg)
    return item


def _check_headers(item: Mapping[str, object]) -> None:
    """Every file of a case on the same 3D grid (headers only; no voxel data read)."""
    others = [item[m] for m in BRATS_MODALITIES if m in item and item[m] != item["image"]]
    files = [item["image"], *others, *([item["label"]] if "label" in item else [])]
    first = nib.load(files[0])
    if len(first.shape) != 3:
        raise ValueError(
            f"{files[0]}: shape {first.shape}; a BraTS volume is 3D ({' × '.join(map(str, BRATS_SHAPE))})."
        )
    for other in files[1:]:
        header = nib.load(other)
        if header.shape != first.shape:
            raise ValueError(f"{other}: shape {header.shape} differs from {files[0]} shape {first.shape}.")
        if not np.allclose(header.affine, first.affine, atol=1e-3):
            raise ValueError(f"{other}: affine differs from {files[0]}'s; the case's volumes are not co-registered.")


def brats_datalist(
    root: str | Path,
    split: str | None = "training",
    modalities: Sequence[str] = SEED_MODALITIES,
    label: bool | None = None,
    check_headers: bool = True,
) -> list[dict[str, object]]:
    """Datalist of the BraTS cases under ``root`` (see :func:`brats_case_folders` for what ``root`` may be).

    Args:
        root: a BraTS folder or one case folder.
        split: ``"training"``, ``"validation"`` or None (both) when ``root`` holds both.
        modalities: channels in order; the seed's ``("t1", "t2", "flair")`` by default.
        label: see :func:`brats_case`.
        check_headers: refuse a case whose files differ in shape or affine (reads headers only).
    """
    items = [brats_case(folder, modalities, label) for folder in brats_case_folders(root, split)]
    if check_headers:
        for item in items:
            _check_headers(item)
    return items


def brats_split(
    datalist: Sequence[dict],
    path: str | Path,
    valid: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    lists: Mapping[str, Sequence[str]] | str | Path | None = None,
) -> dict[str, list[dict]]:
    """Seeded train/valid/test split by case, written to ``path`` (e.g. ``split.json`` beside the checkpoint).

    The same cases, sizes and seed give the same split whatever order the cases were listed in; ``lists``
    (ids per split, or a ``split.json`` written earlier) reproduces a saved split instead.
    """
    split = split_datalist(datalist, valid=valid, test=test, seed=seed, lists=lists)
    save_split(split, path)
    return split


# --- inputs to segment: cases named <case>_<sequence> in any folder structure -----------------------------

SEQUENCE_NAMES: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1n", "t1w"),
    "t1ce": ("t1ce", "t1c", "t1gd"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "t2flair"),
}
"""File-name tokens of each sequence (case-insensitive): BraTS 2020, BraTS 2023 (``t1n``, ``t1c``, ``t2w``, ``t2f``)
and BIDS (``T1w``, ``T2w``, ``FLAIR``)."""

_TOKEN = {token: sequence for sequence, tokens in SEQUENCE_NAMES.items() for token in tokens}
_TOKENS = "|".join(sorted(_TOKEN, key=len, reverse=True))
_SEQUENCE_FILE = re.compile(r"^(?P<case>.+)[_\-.](?P<token>" + _TOKENS + r")$", re.IGNORECASE)


def sequence_of(path: str | Path) -> tuple[str, str] | None:
    """``(case, sequence)`` of a file named ``<case>_<sequence>.<ext>`` (``-`` or ``.`` also separate), else None."""
    match = _SEQUENCE_FILE.match(image_stem(path))
    if match is None:
        return None
    return match.group("case"), _TOKEN[match.group("token").lower()]


def case_sequences(folder: str | Path, exclude: Sequence[Path] = ()) -> dict[str, dict[str, Path]]:
    """Case → sequence → file of every sequence file directly in ``folder`` (several cases may share a folder)."""
    found: dict[str, dict[str, Path]] = {}
    folder = Path(folder)
    if not folder.is_dir() or any(folder.resolve() == e or e in folder.resolve().parents for e in exclude):
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not is_image_file(path):
            continue
        parsed = sequence_of(path)
        if parsed is None:
            continue
        case, sequence = parsed
        if sequence in found.setdefault(case, {}):
            raise ValueError(
                f"{folder}: case {case} has two {sequence} files ({found[case][sequence].name}, {path.name}); "
                "keep one of them."
            )
        found[case][sequence] = path
    return found


def _folders_below(root: Path, recursive: bool) -> list[Path]:
    """``root``, its sub-folders (all of them when ``recursive``) and the case folders of a Kaggle/CBICA layout."""
    if recursive:
        return [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    with contextlib.suppress(FileNotFoundError):  # not a BraTS download: the folder and its sub-folders only
        folders += brats_case_folders(root, split=None)
    return list(dict.fromkeys(folders))


def _item(case: str, files: Mapping[str, Path], modalities: Sequence[str]) -> dict[str, str]:
    """A case to segment: ``image`` is its first modality (any file it has, when that one is missing)."""
    item = {"id": case}
    item.update({m: str(files[m]) for m in modalities if m in files})
    present = [m for m in modalities if m in files] or sorted(files)
    item["image"] = str(files[present[0]])
    return item


@reported
def brats_inputs(
    inputs: str | Path | Sequence[str | Path],
    recursive: bool = False,
    exclude: Sequence[str | Path] = (),
    modalities: Sequence[str] = SEED_MODALITIES,
) -> list[dict[str, str]]:
    """Cases to segment, ``[{"id", "image", <modality>: path...}]``, from case folders, dataset folders, files.

    Each input is one of:

    - a folder: every case whose sequence files lie in it, in its sub-folders (all levels with ``recursive``)
      or in the case folders of a Kaggle/CBICA BraTS layout (a BraTS case folder, a whole download, or a flat
      folder holding several cases' files);
    - one sequence file (``BraTS20_Training_001_flair.nii``): its case, with the other sequences beside it; the
      three files of a case name the case once;
    - ``T1,T2,FLAIR``: a case's files in ``modalities`` order, in any naming;
    - a glob pattern: the cases of the files it matches.

    A case missing a sequence is still listed: loading it fails (:class:`BratsSequencesd` names the missing
    file) and the cohort records why, so one incomplete case never stops a run. Ids are the case names
    (``BraTS20_Training_001``), prefixed by their folder where two folders hold cases of one name.

    Args:
        inputs: folders, files, glob patterns and comma-separated file triples.
        recursive: search folders at every depth.
        exclude: folders whose files are never inputs (the output folder, when it lies inside an input folder).
        modalities: the sequences the network reads, in channel order.
    """
    entries = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not entries:
        raise ValueError("no input given: pass BraTS case folders, dataset folders, sequence files or T1,T2,FLAIR.")
    given = [Path(str(e)).expanduser().resolve() for e in entries if isinstance(e, (str, Path)) and Path(e).is_dir()]
    below = [Path(e).resolve() for e in exclude]
    below = [e for e in below if not any(e == g or e in g.parents for g in given)]  # never the input itself
    cases: dict[tuple[Path, str], dict[str, Path]] = {}

    def add_file(path: Path) -> None:
        parsed = sequence_of(path)
        if parsed is None:
            raise ValueError(
                f"{path}: cannot tell which case and sequence this file is (name it <case>_<sequence>.nii.gz with "
                f"a sequence among {', '.join(modalities)}), or give the case's files as one "
                f"{','.join(m.upper() for m in modalities)} argument."
            )
        case, _ = parsed
        cases.setdefault((path.parent.resolve(), case), {}).update(case_sequences(path.parent).get(case, {}))

    for entry in entries:
        text = ",".join(map(str, entry)) if isinstance(entry, (list, tuple)) else str(entry)
        path = Path(text).expanduser()
        if "," in text and not path.exists():
            files = [Path(part.strip()).expanduser() for part in text.split(",")]
            if len(files) != len(modalities):
                raise ValueError(
                    f"{text}: {len(files)} files; a case given by its files needs {len(modalities)}, "
                    f"in the order {','.join(modalities)}."
                )
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{', '.join(missing)}: no such file.")
            parsed = sequence_of(files[0])
            case = parsed[0] if parsed else image_stem(files[0])
            cases[(files[0].parent.resolve(), case)] = dict(zip(modalities, files))
        elif any(char in text for char in "*?[") and not path.exists():
            matches = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if is_image_file(Path(p))]
            matches = [p for p in matches if sequence_of(p)]
            if not matches:
                raise FileNotFoundError(f"{text}: the pattern matches no sequence file (<case>_<sequence>.nii.gz).")
            for match in matches:
                add_file(match)
        elif path.is_dir():
            before = len(cases)
            for folder in _folders_below(path, recursive):
                for case, files in case_sequences(folder, below).items():
                    cases.setdefault((folder.resolve(), case), {}).update(files)
            if len(cases) == before:
                raise FileNotFoundError(
                    f"{path}: no case found (files named <case>_<sequence>.nii[.gz], such as "
                    f"BraTS20_Training_001_flair.nii, in it{', at any depth' if recursive else ' or its sub-folders'})"
                    "; point at a BraTS case or dataset folder, or give T1,T2,FLAIR files."
                )
        elif not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder.")
        else:
            add_file(path)
    names = [case for _, case in cases]
    repeated = {case for case in names if names.count(case) > 1}
    items = []
    for (folder, case), files in sorted(cases.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        ident = f"{folder.name}_{case}" if case in repeated else case
        items.append(_item(ident, files, modalities))
    idents = [item["id"] for item in items]
    clashes = sorted({i for i in idents if idents.count(i) > 1})
    if clashes:
        raise ValueError(f"several cases would write the same outputs ({', '.join(clashes)}); rename or split them.")
    return items


def _beside(image: Path, given: object, sequence: str, case: str) -> Path:
    """A sequence named in the data: a path, or a file name (with or without extension) in the image's folder."""
    path = Path(str(given)).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute():
        candidates = [image.parent / path] + [image.parent / f"{path}{s}" for s in (".nii.gz", ".nii", ".mgz")]
        for candidate in candidates:
            if is_image_file(candidate):
                return candidate
    raise InvalidImageError(
        f"{given}: the {sequence} image of case {case} was not found (as a path, or as a name in {image.parent})."
    )


class BratsSequencesd(MapTransform):
    """Complete a case with the paths of every sequence the network reads, before loading.

    An item that names a sequence keeps it (a path, or a file name in the image's folder: a MONAI Label image
    id given in the request's ``params``). A missing sequence is the file beside ``image`` named like it with
    that sequence's token (``BraTS20_Training_001_flair.nii`` → ``..._t1.nii``, ``..._t2.nii``): MONAI Label
    sends one image, the study the user opened. An ``image`` holding a list of paths gives the sequences in
    order. What cannot be found is the case's :class:`~neurobundles.errors.InvalidImageError` (the cohort records
    it and goes on).

    Args:
        keys: the sequence keys to fill, in channel order (``t1``, ``t2``, ``flair``).
        image_key: the case's image (a path, a list of paths, or an image whose ``filename_or_obj`` is one).
        id_key: key of the case's name, for messages.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", id_key: str = "id") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key, self.id_key = image_key, id_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        image = d[self.image_key]
        if isinstance(image, (list, tuple)):
            if len(image) != len(self.keys):
                raise InvalidImageError(
                    f"{', '.join(map(str, image))}: {len(image)} images given for the {len(self.keys)} sequences "
                    f"{', '.join(self.keys)}."
                )
            for key, path in zip(self.keys, image):
                d.setdefault(key, str(path))
            d[self.image_key] = str(image[0])
            image = image[0]
        path = Path(str(getattr(image, "meta", {}).get("filename_or_obj", image)))
        parsed = sequence_of(path)
        case = str(d.get(self.id_key) or (parsed[0] if parsed else path.name))
        siblings = case_sequences(path.parent).get(parsed[0], {}) if parsed else {}
        for key in self.keys:
            given = d.get(key)
            if given is not None and str(given) != "":
                if isinstance(given, (str, Path)):
                    d[key] = str(_beside(path, given, key, case))
                continue  # already loaded
            if key in siblings:
                d[key] = str(siblings[key])
                continue
            if parsed is None:
                raise InvalidImageError(
                    f"{path}: cannot find the case's other sequences because the file is not named "
                    f"<case>_<sequence>.nii.gz; name the files BraTS-style (<case>_t1, <case>_t2, <case>_flair), "
                    f'or name each sequence: {{"{key}": "<image id or path>"}} in a MONAI Label request, '
                    "a T1,T2,FLAIR triple on the command line."
                )
            tokens = "/".join(SEQUENCE_NAMES.get(key, (key,)))
            raise InvalidImageError(
                f"{path}: no {key} image of case {parsed[0]} beside it (looked for {parsed[0]}_<{tokens}>.nii[.gz] "
                f"in {path.parent}); the model needs {', '.join(self.keys)}. Put the case's sequences side by side, "
                f'or name it: {{"{key}": "<image id or path>"}} in a MONAI Label request.'
            )
        return d
