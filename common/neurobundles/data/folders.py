"""Turn files, folders and glob patterns into a MONAI datalist of images to segment."""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from neurobundles.errors import reported
from neurobundles.filenames import IMAGE_SUFFIXES, image_stem, is_image_file

__all__ = ["find_inputs", "image_datalist", "is_image_file", "is_output_file", "unique_ids"]


def is_output_file(path: Path) -> bool:
    """A file this package wrote: a hidden temporary (``.<name>.tmp-…``), or a label map that its subject's
    ``<id>_summary.json`` lists (or, from runs before summaries, ``<id>_seg…`` beside ``<id>_volumes.csv``)."""
    if path.name.startswith("."):
        return True
    stem = image_stem(path)
    if "_" not in stem:
        return False
    ident = stem.rsplit("_", 1)[0]
    summary = path.parent / f"{ident}_summary.json"
    if summary.is_file():
        try:
            return path.name in json.loads(summary.read_text()).get("outputs", {}).values()
        except (OSError, ValueError):
            return False
    return stem.endswith("_seg") and (path.parent / f"{ident}_volumes.csv").is_file()


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == folder or folder in resolved.parents for folder in folders)


def _candidates(paths: Sequence[Path], accept: Callable[[Path], bool], exclude: Sequence[Path]) -> list[Path]:
    """Accepted files among ``paths``, without this package's outputs and what lies in ``exclude``."""
    return [p for p in paths if p.is_file() and accept(p) and not is_output_file(p) and not _inside(p, exclude)]


def _expand(
    entry: str | Path, recursive: bool, accept: Callable[[Path], bool], kind: str, exclude: Sequence[Path]
) -> list[Path]:
    text = str(entry)
    if any(char in text for char in "*?[") and not Path(text).exists():
        matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
        if not matches:
            raise FileNotFoundError(f"{text}: the pattern matches no file.")
        return _candidates(matches, accept, exclude)
    path = Path(text).expanduser()
    if path.is_dir():
        found = _candidates(sorted(path.rglob("*") if recursive else path.iterdir()), accept, exclude)
        if not found:
            raise FileNotFoundError(f"{path}: the folder holds no {kind} other than outputs of earlier runs.")
        return found
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    return [path]


def find_inputs(
    inputs: str | Path | Sequence[str | Path],
    accept: Callable[[Path], bool],
    kind: str,
    recursive: bool = False,
    exclude: Sequence[str | Path] = (),
) -> list[Path]:
    """The files given or found in folders and by glob patterns, once each, in a stable order.

    Files found in folders or by patterns must pass ``accept`` and leave out this package's own outputs (label maps
    with their summary beside them, hidden temporaries) and anything inside ``exclude`` (the output folder, when it
    lies in an input folder); files named explicitly are always taken. ``kind`` names what is looked for in errors.
    """
    entries = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not entries:
        raise ValueError(f"no input given: pass {kind} files, folders or glob patterns.")
    folders = [Path(entry).expanduser().resolve() for entry in entries if Path(entry).expanduser().is_dir()]
    below = [Path(f).resolve() for f in exclude]  # only an output folder inside an input folder is left out
    below = [f for f in below if not any(f == folder or f in folder.parents for folder in folders)]
    paths: list[Path] = []
    for entry in entries:
        for path in _expand(entry, recursive, accept, kind, below):
            if path.resolve() not in {p.resolve() for p in paths}:
                paths.append(path)
    if not paths:
        raise FileNotFoundError(f"no {kind} found in {', '.join(map(str, entries))}.")
    return paths


def unique_ids(paths: Sequence[Path]) -> list[str]:
    """Output names: the file stem, or the folders below the common parent joined by ``_`` where stems collide."""
    stems = [image_stem(p) for p in paths]
    repeated = {stem for stem, count in Counter(stems).items() if count > 1}
    if not repeated:
        return stems
    parents = [Path(p).resolve().parent for p in paths]
    common = Path(os.path.commonpath(parents))
    ids = [
        "_".join([*parent.relative_to(common).parts, stem]) if stem in repeated else stem
        for parent, stem in zip(parents, stems)
    ]
    clashes = sorted({i for i, count in Counter(ids).items() if count > 1})
    if clashes:
        raise ValueError(f"several inputs would write the same outputs ({', '.join(clashes)}); rename or split them.")
    return ids


@reported
def image_datalist(
    inputs: str | Path | Sequence[str | Path], recursive: bool = False, exclude: Sequence[str | Path] = ()
) -> list[dict[str, str]]:
    """``[{"image": path, "id": name}, ...]`` for every image given or found, in a stable order.

    Files found in folders or by patterns leave out this package's own outputs (label maps with their summary
    beside them, hidden temporaries) and anything inside ``exclude`` (the output folder, when it lies in an
    input folder); files named explicitly are always taken.

    Args:
        inputs: image files, folders (their images; with ``recursive`` also in sub-folders) and glob patterns.
        recursive: search folders recursively.
        exclude: folders whose files are never inputs.
    """
    kind = f"NIfTI/MGH/Analyze image ({', '.join(IMAGE_SUFFIXES)})"
    paths = find_inputs(inputs, is_image_file, kind, recursive, exclude)
    return [{"image": str(path), "id": ident} for path, ident in zip(paths, unique_ids(paths))]
