"""A subject's outputs, written as one unit: label map, QC picture, volume table, then the summary that says
they are complete.

``<id>_seg<ext>``, ``<id>_qc.png``, ``<id>_volumes.csv`` and ``<id>_summary.json`` are each written atomically
(a temporary ``.<name>.tmp-…`` file renamed into place), in that order; the summary comes last, so a subject is
complete exactly when its summary exists and names its input. If any write fails, what was written for the
subject is removed, so a failed subject leaves nothing behind. Ids are checked to be plain file names, so no
datalist can place a file outside the output folder.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.atomic import TEMPORARY_MARK, atomic_save, atomic_write_text, ensure_writable_dir
from neurobundles.filenames import image_stem
from neurobundles.labels import LabelTable
from neurobundles.plausibility import warnings_of

from .label_maps import check_output_ext, save_label_map
from .qc import QC_KEY
from .volumes import TOTAL_BRAIN, volumes_csv

__all__ = [
    "SUMMARY_SUFFIX",
    "SaveSegmentationd",
    "clean_stale_temporaries",
    "is_complete",
    "read_summaries",
    "safe_id",
]

logger = logging.getLogger(__name__)

SUMMARY_SUFFIX = "_summary.json"
_UNSAFE = re.compile(r"[/\\\x00]")


def safe_id(ident: object) -> str:
    """``ident`` as a subject name that can only name files inside the output folder, or a ``ValueError``."""
    text = str(ident)
    if not text or text in (".", "..") or _UNSAFE.search(text) or text.startswith(".") or Path(text).is_absolute():
        raise ValueError(
            f"subject id {text!r} is not a plain file name (no path separators, no leading '.', not empty); "
            "outputs are named after the id, so it must not point outside the output folder."
        )
    return text


def _summary_path(output_dir: Path, ident: str) -> Path:
    return output_dir / f"{ident}{SUMMARY_SUFFIX}"


def is_complete(output_dir: str | Path, ident: str, image: str | Path) -> bool:
    """Whether ``ident``'s outputs in ``output_dir`` are complete and were made from ``image``."""
    path = _summary_path(Path(output_dir), ident)
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if str(Path(summary.get("image", "")).resolve()) != str(Path(image).resolve()):
        return False
    return all((Path(output_dir) / name).is_file() for name in summary.get("outputs", {}).values())


def read_summaries(output_dir: str | Path) -> list[dict]:
    """Every complete subject's summary in ``output_dir``, by id (unreadable ones are skipped with a warning)."""
    summaries = []
    for path in sorted(Path(output_dir).glob(f"*{SUMMARY_SUFFIX}")):
        if path.name.startswith("."):
            continue
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            logger.warning(
                "%s: unreadable subject summary (%s); the subject is left out of the cohort table", path, error
            )
    return summaries


def clean_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Remove the temporary files a killed run left in ``output_dir`` (``.<name>.tmp-…``); returns them."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(".") and TEMPORARY_MARK in p.name]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporary file(s) a previous run left in %s", len(stale), folder)
    return stale


class SaveSegmentationd(MapTransform):
    """Write each subject's outputs in ``output_dir`` as one unit (see the module docstring).

    The label map must already be back in the input's grid (after ``Invertd``); its source file is read
    from the tensor's ``filename_or_obj`` meta, and ``id_key`` in the data (if present) names the outputs,
    else the source file's stem. The QC picture (``data["qc_png"]``, from
    :class:`~neurobundles.outputs.RenderQCd`) and the volume rows (``data["volumes"]``, from
    :class:`~neurobundles.outputs.LabelVolumesd`) are written when present.

    Args:
        keys: label-map key, one label channel.
        output_dir: folder for the outputs (created; must be writable).
        table: the bundle's :class:`~neurobundles.labels.LabelTable` (to name the labels in the summary).
        output_postfix: appended to the id.
        output_ext: ``.nii.gz`` (default), ``.nii``, ``.mgz`` or ``.mgh``; anything else fails before any work.
        id_key: data key holding a unique name per input.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        table: LabelTable | None = None,
        output_postfix: str = "seg",
        output_ext: str = ".nii.gz",
        id_key: str = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.table = table
        self.output_postfix = output_postfix
        self.output_ext = check_output_ext(output_ext)
        self.id_key = id_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            prediction = d[key]
            source = str(prediction.meta["filename_or_obj"])
            ident = safe_id(d.get(self.id_key) or image_stem(source))
            labels = np.asarray(prediction.detach().cpu())[0]
            ensure_writable_dir(self.output_dir)
            written: dict[str, Path] = {}
            try:
                target = self.output_dir / f"{ident}_{self.output_postfix}{self.output_ext}"
                written["labels"] = save_label_map(labels, nib.load(source), target)
                if QC_KEY in d:
                    written["qc"] = self.output_dir / f"{ident}_qc.png"
                    atomic_save(written["qc"], lambda tmp, png=d[QC_KEY]: Path(tmp).write_bytes(png))
                if "volumes" in d:
                    written["volumes"] = self.output_dir / f"{ident}_volumes.csv"
                    atomic_write_text(written["volumes"], volumes_csv(d["volumes"]))
                summary = self._summary(ident, source, written, d)
                atomic_write_text(_summary_path(self.output_dir, ident), json.dumps(summary, indent=2) + "\n")
            except BaseException:
                for path in written.values():
                    path.unlink(missing_ok=True)
                raise
            d.pop(QC_KEY, None)
            logger.info("%s → %s", source, written["labels"])
        return d

    @staticmethod
    def _summary(ident: str, source: str, written: Mapping[str, Path], data: Mapping[Hashable, object]) -> dict:
        volumes = {row["name"]: row["volume_mm3"] for row in data.get("volumes", [])}
        return {
            "id": ident,
            "image": str(Path(source).resolve()),
            "outputs": {kind: path.name for kind, path in written.items()},
            "volumes_mm3": volumes,
            "total_brain_mm3": volumes.get(TOTAL_BRAIN),
            "warnings": warnings_of(data),
        }
