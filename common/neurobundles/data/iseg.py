"""iSeg-2017 (6-month infant brain MRI, T1 + T2, CSF / GM / WM) as the challenge distributes it → MONAI datalists.

Layout (the two archives ``iSeg-2017-Training.zip`` and ``iSeg-2017-Testing.zip``, unpacked side by side)::

    iSeg-2017-Training/subject-{1..10}-{T1,T2,label}.{hdr,img}
    iSeg-2017-Testing/subject-{11..23}-{T1,T2}.{hdr,img}          (labels never released)

Analyze 7.5 pairs (the ``.img`` holds the voxels, the ``.hdr`` its header); nibabel reads every volume as
shape (144, 192, 256, 1), 1 mm, T1/T2/label on one grid. Label values 0 background, 10 CSF, 150 grey matter,
250 white matter (:mod:`neurobundles.transforms.iseg` maps them to classes 0–3).

Datalist items are ``{"image": T1, "t2": T2, "label": label, "id": "subject-N"}``: T1 and T2 under separate
keys rather than ``"image": [T1, T2]``, because each modality is loaded, checked (a missing or misaligned T2
is named in the error) and normalised on its own before the two are concatenated, and because MONAI Label's
datastore and request carry one image path (the T1, on whose grid labels are saved), so T2 travels beside it.

Subjects to segment (:func:`iseg_inputs`, the bundle's inference datalist: ``neurobundles segment`` hands the
user's arguments over as ``dataset_dir``) are found the same way outside the challenge's naming: a T2 lies
beside its T1 under the same name with ``T2`` in place of ``T1`` (``subject-11-T2.img``, ``sub-01_T2w.nii.gz``,
``baby_t2.nii.gz``), or the two files are given together as ``T1,T2``. :class:`FindT2d` completes an item
whose ``"t2"`` is missing in the same way when the subject is loaded, so MONAI Label (which passes one image)
and a cohort with one incomplete subject both get a clear error for that subject alone.
"""

from __future__ import annotations

import glob
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.data.folders import is_output_file, unique_ids
from neurobundles.data.splits import split_datalist
from neurobundles.errors import InvalidImageError, reported
from neurobundles.filenames import IMAGE_SUFFIXES, image_stem, is_image_file

__all__ = [
    "ISEG_SHAPE",
    "ISEG_TESTING",
    "ISEG_TESTING_SUBJECTS",
    "ISEG_TRAINING",
    "ISEG_TRAINING_SUBJECTS",
    "SEED_TEST_SUBJECTS",
    "FindT2d",
    "contrast_of",
    "iseg_datalist",
    "iseg_file",
    "iseg_folder",
    "iseg_inputs",
    "iseg_split",
    "iseg_subject",
    "require_training_data",
    "t2_beside",
]

ISEG_TRAINING = "iSeg-2017-Training"
ISEG_TESTING = "iSeg-2017-Testing"
ISEG_TRAINING_SUBJECTS = tuple(range(1, 11))
ISEG_TESTING_SUBJECTS = tuple(range(11, 24))
ISEG_SHAPE = (144, 192, 256)
"""Grid of every iSeg-2017 volume (nibabel adds a trailing axis of 1: Analyze files are written 4D)."""

SEED_TEST_SUBJECTS = ("subject-1",)
"""MedicalZoo's blog holds the first training subject out for testing."""

KINDS = {"training": ("T1", "T2", "label"), "testing": ("T1", "T2")}
FOLDERS = {"training": ISEG_TRAINING, "testing": ISEG_TESTING}
_NAME = re.compile(r"^subject-(\d+)-(T1|T2|label)\.(hdr|img)$")
_LOOSE = re.compile(r"^subject-?(\d+)[-_](t1|t2|label|seg)\b", re.IGNORECASE)


def iseg_file(folder: str | Path, subject: int | str, kind: str) -> Path:
    """``folder/subject-N-<kind>.img`` (the Analyze image file; its ``.hdr`` sits beside it)."""
    number = int(str(subject).removeprefix("subject-"))
    if kind not in ("T1", "T2", "label"):
        raise ValueError(f"kind must be 'T1', 'T2' or 'label', got {kind!r}.")
    return Path(folder) / f"subject-{number}-{kind}.img"


def iseg_folder(root: str | Path, subset: str = "training") -> Path:
    """The ``iSeg-2017-Training`` (or ``-Testing``) folder: ``root`` itself, or that folder inside ``root``."""
    if subset not in FOLDERS:
        raise ValueError(f"subset must be 'training' or 'testing', got {subset!r}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: iSeg-2017 folder not found.")
    if root.name == FOLDERS[subset]:
        return root
    inside = root / FOLDERS[subset]
    if inside.is_dir():
        return inside
    if any(_NAME.match(p.name) for p in root.iterdir()):
        return root  # a folder of iSeg-named files under another name (e.g. a copy of a few subjects)
    raise FileNotFoundError(
        f"{root}: no {FOLDERS[subset]} folder and no subject-N-T1.img files; point at the folder that holds "
        f"{ISEG_TRAINING} and {ISEG_TESTING} (the unpacked iSeg-2017 archives) or at one of them."
    )


MISSING = {
    "T1": "T1 image of {subject} missing (every subject needs its T1",
    "T2": "T2 image of {subject} missing (iSeg-2017 subjects need both contrasts; copy the subject's T2 beside its T1",
    "label": "label map of {subject} missing (training subjects need one; use subset='testing' for unlabelled ones",
}


def _pair(image: Path, subject: str, kind: str) -> Path:
    """``image`` once both halves of its Analyze pair exist."""
    for path in (image, image.with_suffix(".hdr")):
        if not path.is_file():
            reason = MISSING[kind].format(subject=subject)
            raise FileNotFoundError(f"{path}: {reason}; an Analyze image is a .hdr/.img pair).")
    return image


def _spatial_shape(path: Path) -> tuple[int, ...]:
    """The volume's shape from its header, without a trailing axis of 1; refuses anything but one 3D volume."""
    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as error:  # nibabel raises several types for damaged headers
        raise ValueError(f"{path}: cannot be read as an Analyze image ({error}).") from error
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise ValueError(f"{path}: shape {shape} is not one 3D volume (iSeg-2017 volumes are {ISEG_SHAPE}).")
    return shape


def _check_grid(t1: Path, label: Path) -> None:
    """A label map must lie on its T1's grid: same shape and affine."""
    shape_t1, shape_other = _spatial_shape(t1), _spatial_shape(label)
    if shape_other != shape_t1:
        raise ValueError(f"{label}: shape {shape_other} differs from {t1.name}'s {shape_t1}; they must share a grid.")
    if not np.allclose(nib.load(str(t1)).affine, nib.load(str(label)).affine, atol=1e-3):
        raise ValueError(f"{label}: its affine differs from {t1.name}'s; the label map is not on the T1's grid.")


def _numbers(folder: Path) -> list[int]:
    """Subject numbers with a ``subject-N-T1.img`` in ``folder``; files in a near-miss naming are an error."""
    numbers, misnamed = set(), []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if match:
            if match.group(2) == "T1" and match.group(3) == "img":
                numbers.add(int(match.group(1)))
        elif _LOOSE.match(path.name):
            misnamed.append(path.name)
    if misnamed and not numbers:
        raise ValueError(
            f"{folder}: files such as {misnamed[0]} are not in iSeg-2017 naming; expected "
            "subject-N-T1.img/.hdr, subject-N-T2.img/.hdr and subject-N-label.img/.hdr (Analyze 7.5, case as shown)."
        )
    return sorted(numbers)


def iseg_subject(
    t1: str | Path, t2: str | Path | None = None, label: str | Path | None = None, subject: str | None = None
) -> dict[str, str]:
    """One item ``{"image", "t2", ["label"], "id"}`` for a T1 file, its T2 found beside it when not given.

    A T1 in iSeg naming (``subject-N-T1.img``) finds ``subject-N-T2.img`` next to it; other names need ``t2``.
    Used by the command line and MONAI Label, where the user gives one subject.

    Args:
        t1: the T1 image (any format nibabel reads; ``.img`` for Analyze).
        t2: the T2 image; default the iSeg-named sibling of ``t1``.
        label: optional label map on the T1's grid.
        subject: the item's id; default ``subject-N`` for iSeg names, else the T1's file name without extension.
    """
    t1 = Path(t1).expanduser()
    if t1.suffix == ".hdr":
        t1 = t1.with_suffix(".img")
    match = _NAME.match(t1.name)
    ident = subject or (f"subject-{match.group(1)}" if match else t1.name.split(".")[0])
    if not t1.is_file():
        raise FileNotFoundError(f"{t1}: T1 image not found.")
    if t2 is None:
        if not match or match.group(2) != "T1":
            raise ValueError(
                f"{t1}: not named subject-N-T1.img, so its T2 cannot be found beside it; pass the T2 file as well."
            )
        t2 = t1.with_name(f"subject-{match.group(1)}-T2.img")
        _pair(t2, ident, "T2")
    t2 = Path(t2).expanduser()
    if not t2.is_file():
        raise FileNotFoundError(f"{t2}: T2 image of {ident} not found; iSeg-2017 models need T1 and T2.")
    item = {"image": str(t1), "t2": str(t2), "id": ident}
    if label is not None:
        label = Path(label).expanduser()
        if not label.is_file():
            raise FileNotFoundError(f"{label}: label map of {ident} not found.")
        _check_grid(t1, label)
        item["label"] = str(label)
    return item


def iseg_datalist(
    root: str | Path,
    subset: str = "training",
    subjects: Iterable[int | str] | None = None,
    check: bool = True,
) -> list[dict[str, str]]:
    """One item per subject, ``{"image": T1, "t2": T2, "label": label, "id": "subject-N"}``, by subject number.

    Testing subjects have no ``"label"``. Every file is checked to exist as a ``.hdr``/``.img`` pair, and (with
    ``check``, from the headers only) each to be one 3D volume and the label to lie on the T1's grid, so a bad
    subject fails here, named, rather than hours into training. T1 and T2 grids may differ: the preprocessing
    resamples T2 onto T1 (or refuses, as configured).

    Args:
        root: the folder holding ``iSeg-2017-Training`` and ``iSeg-2017-Testing``, or one of them.
        subset: ``"training"`` (subjects 1–10, labelled) or ``"testing"`` (11–23, no labels).
        subjects: subject numbers or ids (``3`` or ``"subject-3"``) to take; default all found.
        check: read the headers to compare grids.
    """
    folder = iseg_folder(root, subset)
    found = _numbers(folder)
    if subjects is None:
        numbers = found
        if not numbers:
            raise FileNotFoundError(f"{folder}: no subject-N-T1.img; is this an unpacked iSeg-2017 {subset} folder?")
    else:
        numbers = [int(str(s).removeprefix("subject-")) for s in subjects]
    items = []
    for number in numbers:
        ident = f"subject-{number}"
        paths = {kind: _pair(iseg_file(folder, number, kind), ident, kind) for kind in KINDS[subset]}
        if check:
            for kind in ("T1", "T2"):  # one 3D volume each; their grids may differ
                _spatial_shape(paths[kind])
            if "label" in paths:
                _check_grid(paths["T1"], paths["label"])
        item = {"image": str(paths["T1"]), "t2": str(paths["T2"]), "id": ident}
        if "label" in paths:
            item["label"] = str(paths["label"])
        items.append(item)
    return items


def iseg_split(
    datalist: Sequence[dict],
    valid: float = 0.2,
    seed: int = 0,
    test: Sequence[str] = SEED_TEST_SUBJECTS,
    lists: Mapping[str, Sequence[str]] | str | Path | None = None,
) -> dict[str, list[dict]]:
    """``{"train", "valid", "test"}`` as in the seed: ``test`` subjects held out, the rest split by ``valid``, seeded.

    MedicalZoo trains on a share of the training subjects (``--split 0.8``) and its blog tests on subject 1;
    here subject 1 is the test set and the other nine are shuffled with ``seed`` and split 80/20 (7 train,
    2 validation). ``lists`` (ids per split, or a JSON file such as the ``split.json`` a training run saves
    with :func:`neurobundles.data.splits.save_split`) fixes the split instead.

    Args:
        datalist: items of :func:`iseg_datalist` (training subset).
        valid: validation share of the subjects left after the test subjects (a fraction, or a count).
        seed: seed of the shuffle.
        test: ids of the held-out test subjects.
        lists: explicit ids per split; overrides the other arguments.
    """
    if lists is not None:
        return split_datalist(datalist, lists=lists)
    if not datalist:  # no dataset given (MONAI Label passes its own data): nothing to split
        return {"train": [], "valid": [], "test": []}
    ids = {str(item["id"]) for item in datalist}
    missing = [ident for ident in test if ident not in ids]
    if missing:
        raise ValueError(f"test subject(s) {', '.join(missing)} not in the datalist ({len(ids)} subjects).")
    rest = [item for item in datalist if str(item["id"]) not in set(test)]
    split = split_datalist(rest, valid=valid, test=0, seed=seed)
    split["test"] = [item for item in datalist if str(item["id"]) in set(test)]
    return split


@reported
def require_training_data(items: Sequence[Mapping], dataset_dir: str | Path | None = None) -> Sequence[Mapping]:
    """``items`` when there are any, else a ``ValueError`` saying how to give the training data.

    ``train.json`` has no default data folder, so that MONAI Label (which passes its own datalist and never a
    folder) can run it; this check, in ``initialize``, stops a run that was given no data before it starts.
    """
    if not items:
        where = f"{dataset_dir} holds no training subjects" if dataset_dir else "no --dataset_dir was given"
        raise ValueError(
            f"nothing to train on: {where}. Pass --dataset_dir /path/to/iSeg-2017 (the folder holding "
            f"{ISEG_TRAINING}, or that folder itself), or a --split_file whose 'train' list is not empty."
        )
    return items


# ---------------------------------------------------------------- subjects to segment, in any naming

_TOKEN = re.compile(r"[A-Za-z0-9]+")
CONTRAST_TOKENS = {"t1": "T1", "t1w": "T1", "t2": "T2", "t2w": "T2", "label": "label", "labels": "label"}
CONTRAST_TOKENS |= {"seg": "label", "dseg": "label"}
"""Name tokens (between non-alphanumeric characters, any case) that say what a file holds."""

_SEPARATORS = "-_. "


def contrast_of(path: str | Path) -> str | None:
    """``"T1"``, ``"T2"`` or ``"label"`` from the last such token of a file name (``sub-01_T1w.nii.gz`` → T1)."""
    found = [CONTRAST_TOKENS.get(t.group().lower()) for t in _TOKEN.finditer(image_stem(path))]
    found = [kind for kind in found if kind]
    return found[-1] if found else None


def _t1_token(stem: str) -> re.Match | None:
    tokens = [t for t in _TOKEN.finditer(stem) if CONTRAST_TOKENS.get(t.group().lower()) == "T1"]
    return tokens[-1] if tokens else None


def _partner_names(t1: Path) -> list[Path]:
    """Where a T1's T2 would be: its name with ``T2`` for ``T1`` (same case), the T1's format first."""
    stem = image_stem(t1)
    token = _t1_token(stem)
    if token is None:
        return []
    start, end = token.span()
    text = token.group()
    t2_stem = stem[:start] + text[0] + ("2" if text[1] == "1" else text[1]) + text[2:] + stem[end:]
    suffix = t1.name[len(stem) :]
    suffixes = [suffix] + [s for s in IMAGE_SUFFIXES if s not in (suffix.lower(), ".hdr")]
    return [t1.with_name(t2_stem + s) for s in suffixes]


def t2_beside(t1: str | Path) -> Path | None:
    """The T2 image beside a T1 (same name with ``T2`` in place of ``T1``, any image format), or None."""
    t1 = Path(t1)
    if t1.suffix == ".hdr":
        t1 = t1.with_suffix(".img")
    for candidate in _partner_names(t1):
        if is_image_file(candidate):
            return candidate
    return None


def _subject_id(t1: Path) -> str:
    """The T1's file name without extension and without its T1 token (``sub-01_T1w.nii.gz`` → ``sub-01``)."""
    stem = image_stem(t1)
    token = _t1_token(stem)
    if token is None:
        return stem
    start, end = token.span()
    left, right = stem[:start].rstrip(_SEPARATORS), stem[end:].lstrip(_SEPARATORS)
    separator = stem[start - 1] if start > 0 and stem[start - 1] in _SEPARATORS else "_"
    ident = left + (separator if left and right else "") + right
    return ident or t1.resolve().parent.name


def _unique(ids: list[str], paths: list[Path]) -> list[str]:
    """``ids``, with the folders below the inputs' common parent prefixed where two subjects share one."""
    repeated = {ident for ident, count in Counter(ids).items() if count > 1}
    if not repeated:
        return ids
    stems = unique_ids(paths)  # folder-prefixed file names where names collide
    out = [stem if ident in repeated else ident for ident, stem in zip(ids, stems)]
    clashes = sorted(ident for ident, count in Counter(out).items() if count > 1)
    if clashes:
        raise ValueError(f"several inputs would write the same outputs ({', '.join(clashes)}); rename or split them.")
    return out


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == folder or folder in resolved.parents for folder in folders)


def _t1_files(paths: Iterable[Path], exclude: Sequence[Path]) -> list[Path]:
    """The images among ``paths`` that are subjects: not T2s, label maps, this package's outputs or excluded."""
    return [
        p
        for p in paths
        if is_image_file(p) and not is_output_file(p) and not _inside(p, exclude) and contrast_of(p) in ("T1", None)
    ]


def _folders(folder: Path) -> list[Path]:
    """``folder``, or its ``iSeg-2017-Training``/``-Testing`` folders when it is the folder that holds them."""
    subsets = [folder / FOLDERS[subset] for subset in ("training", "testing") if (folder / FOLDERS[subset]).is_dir()]
    return subsets or [folder]


def _pair_argument(text: str) -> tuple[Path, Path]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{text!r}: give a subject's two files as T1,T2 (one comma, no spaces needed).")
    paths = []
    for part, kind in zip(parts, ("T1", "T2")):
        path = Path(part).expanduser()
        path = path.with_suffix(".img") if path.suffix == ".hdr" else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {kind} image of the pair {text!r} not found.")
        paths.append(path)
    return paths[0], paths[1]


@reported
def iseg_inputs(
    inputs: str | Path | Sequence[str | Path], recursive: bool = False, exclude: Sequence[str | Path] = ()
) -> list[dict[str, str]]:
    """Subjects to segment, ``[{"image": T1, "t2": T2, "id": name}, ...]``, from files, folders, patterns and pairs.

    Each input is one of:

    - ``T1,T2``: a subject's two files, in any naming and format;
    - a T1 file: its T2 is the file beside it named with ``T2`` for ``T1`` (``subject-11-T1.img`` →
      ``subject-11-T2.img``, ``sub-01_T1w.nii.gz`` → ``sub-01_T2w.nii.gz``, ``baby_t1.nii`` → ``baby_t2.nii``);
    - a folder (with ``recursive`` also its sub-folders; the folder holding ``iSeg-2017-Training`` and
      ``iSeg-2017-Testing``: both): every image in it except T2s, label maps (names with ``T2``, ``label`` or
      ``seg``) and this package's outputs is a subject's T1;
    - a glob pattern: the T1s among the files it matches.

    A subject whose T2 is not found is still listed, without ``"t2"``: :class:`FindT2d` then fails for that
    subject alone when it is loaded, and the cohort records why, so one incomplete subject never stops a run.
    Files named explicitly must exist; a file named as a T1 that is a T2 or a label map (by its name) is an
    error. Ids are the T1's name without extension and ``T1`` token (``subject-11``, ``sub-01``).

    Args:
        inputs: files, folders, glob patterns and ``T1,T2`` pairs.
        recursive: search folders recursively.
        exclude: folders whose files are never inputs (the output folder, when it lies inside an input folder).
    """
    entries = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not entries:
        raise ValueError("no input given: pass subject folders, T1 files, glob patterns or T1,T2 pairs.")
    folders = [Path(str(entry)).expanduser() for entry in entries if isinstance(entry, (str, Path))]
    given = [folder.resolve() for folder in folders if folder.is_dir()]
    below = [Path(f).resolve() for f in exclude]
    below = [f for f in below if not any(f == folder or f in folder.parents for folder in given)]
    subjects: list[tuple[Path, Path | None]] = []
    for entry in entries:
        text = ",".join(map(str, entry)) if isinstance(entry, (list, tuple)) else str(entry)  # Fire reads a,b so
        path = Path(text).expanduser()
        if "," in text and not path.exists():
            subjects.append(_pair_argument(text))
            continue
        if any(char in text for char in "*?[") and not path.exists():
            matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            if not matches:
                raise FileNotFoundError(f"{text}: the pattern matches no file.")
            subjects += [(t1, t2_beside(t1)) for t1 in _t1_files(matches, below)]
        elif path.is_dir():
            found = []
            for folder in _folders(path):
                found += _t1_files(sorted(folder.rglob("*") if recursive else folder.iterdir()), below)
            if not found:
                raise FileNotFoundError(
                    f"{path}: no T1 image found (NIfTI, MGH or Analyze files other than T2s, label maps and outputs "
                    "of earlier runs); point at a subject folder, or give T1,T2 pairs."
                )
            subjects += [(t1, t2_beside(t1)) for t1 in found]
        elif not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder.")
        else:
            t1 = path.with_suffix(".img") if path.suffix == ".hdr" else path
            kind = contrast_of(t1)
            if kind in ("T2", "label"):
                raise ValueError(
                    f"{t1}: is a {kind} image by its name; pass the subject's T1 (its T2 is found beside it) or the "
                    "two files as T1,T2."
                )
            subjects.append((t1, t2_beside(t1)))
    unique: dict[Path, tuple[Path, Path | None]] = {}
    for t1, t2 in subjects:  # a T1 found twice keeps its first place, and a T2 if either occurrence has one
        first = unique.setdefault(t1.resolve(), (t1, t2))
        if first[1] is None and t2 is not None:
            unique[t1.resolve()] = (first[0], t2)
    chosen = list(unique.values())
    ids = _unique([_subject_id(t1) for t1, _ in chosen], [t1 for t1, _ in chosen])
    items = []
    for (t1, t2), ident in zip(chosen, ids):
        item = {"image": str(t1), "id": ident}
        if t2 is not None:
            item["t2"] = str(t2)
        items.append(item)
    return items


class FindT2d(MapTransform):
    """Complete a subject with its T2 when loading it: the file beside the T1 named with ``T2`` for ``T1``.

    An item that names its T2 is checked to exist. MONAI Label passes a single image (the T1), and
    :func:`iseg_inputs` leaves ``"t2"`` out where it found none, so this is where a missing T2 becomes the
    subject's error (an :class:`~neurobundles.errors.InvalidImageError` the cohort records) rather than the run's.

    Args:
        keys: the T2 key(s) to fill.
        image_key: the T1's key (a path, or an image whose ``filename_or_obj`` is one).
        id_key: key of the subject's name, for messages.
    """

    def __init__(self, keys: KeysCollection = "t2", image_key: str = "image", id_key: str = "id") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key, self.id_key = image_key, id_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        image = d[self.image_key]
        t1 = Path(str(getattr(image, "meta", {}).get("filename_or_obj", image)))
        subject = d.get(self.id_key) or t1.name
        for key in self.keys:
            given = d.get(key)
            if given is not None and str(given) != "":
                if not isinstance(given, (str, Path)):
                    continue  # already loaded
                d[key] = str(self._named(Path(given).expanduser(), t1, subject))
                continue
            found = t2_beside(t1)
            if found is None:
                tried = ", ".join(p.name for p in _partner_names(t1)[:2])
                where = f"looked for {tried}" if tried else "its name has no T1 in it to replace by T2"
                raise InvalidImageError(
                    f"{t1}: no T2 image found beside this T1 ({where}); iSeg-2017 models need T1 and T2. Put the "
                    "subject's T2 beside it named like it with T2 for T1 (subject-N-T2.img, sub-01_T2w.nii.gz), or "
                    'name it: a T1,T2 pair on the command line, {"t2": "<image id or path>"} in a MONAI Label request.'
                )
            d[key] = str(found)
        return d

    @staticmethod
    def _named(given: Path, t1: Path, subject: object) -> Path:
        """A T2 given by path, or by name (with or without extension) in the T1's folder (a MONAI Label image id)."""
        if given.is_file():
            return given
        if not given.is_absolute():
            beside = t1.parent / given
            for candidate in [beside] + [beside.with_name(beside.name + s) for s in IMAGE_SUFFIXES if s != ".hdr"]:
                if is_image_file(candidate):
                    return candidate
        raise InvalidImageError(
            f"{given}: T2 image of {subject} not found (as a path, or as a name in {t1.parent}, the T1's folder)."
        )
