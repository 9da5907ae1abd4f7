"""Turn files, folders and glob patterns into a MONAI datalist of images to segment."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from neurobundles.filenames import IMAGE_SUFFIXES, image_stem, is_image_file

__all__ = ["image_datalist", "is_image_file", "unique_ids"]


def _expand(entry: str | Path, recursive: bool) -> list[Path]:
    text = str(entry)
    if any(char in text for char in "*?["):
        matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
        if not matches:
            raise FileNotFoundError(f"{text}: the pattern matches no file.")
        return [p for p in matches if is_image_file(p)]
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if is_image_file(p))
        if not found:
            raise FileNotFoundError(
                f"{path}: the folder holds no NIfTI/MGH/Analyze image ({', '.join(IMAGE_SUFFIXES)})."
            )
        return found
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    return [path]


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


def image_datalist(inputs: str | Path | Sequence[str | Path], recursive: bool = False) -> list[dict[str, str]]:
    """``[{"image": path, "id": name}, ...]`` for every image given or found, in a stable order.

    Args:
        inputs: image files, folders (their images; with ``recursive`` also in sub-folders) and glob patterns.
        recursive: search folders recursively.
    """
    entries = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not entries:
        raise ValueError("no input given: pass image files, folders or glob patterns.")
    paths: list[Path] = []
    for entry in entries:
        for path in _expand(entry, recursive):
            if path.resolve() not in {p.resolve() for p in paths}:
                paths.append(path)
    if not paths:
        raise FileNotFoundError(f"no image found in {', '.join(map(str, entries))}.")
    return [{"image": str(path), "id": ident} for path, ident in zip(paths, unique_ids(paths))]
