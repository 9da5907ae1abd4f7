"""A microscopy cutout's outputs, written as one unit: label map in the input's format, class fractions, QC picture.

For each cutout (an ``.npy`` array, a TIFF stack or a NIfTI volume, see :mod:`neurobundles.data.cutouts`):
``<id>_seg<input suffix>`` (the label map in the input's own format, axis order and grid: ``a.tif`` gives
``a_seg.tif``), ``<id>_fractions.csv`` (pixels and fraction of the cutout per class), ``<id>_qc.png`` (the slice
with the most foreground, grey levels beside the labels drawn over them) and ``<id>_summary.json``, written last
and atomically like the others: a cutout is complete exactly when its summary exists, the rule the cohort engine
(:class:`~neurobundles.engines.Cohort`) uses to resume runs. The summary carries the fractions; :func:`write_fractions`
gathers every summary of an output folder into ``fractions.csv``. Cutouts carry no physical voxel size (an ``.npy``
has none), so no volumes in mm³ are written: the cohort's ``volumes.csv`` lists ids and warnings only.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.atomic import atomic_save, atomic_write_text, ensure_writable_dir
from neurobundles.data.cutouts import cutout_stem, save_cutout_labels
from neurobundles.labels import LabelTable

from .qc import visible_colors
from .subject import SUMMARY_SUFFIX, read_summaries, safe_id

__all__ = ["FRACTIONS", "SaveCutoutSegmentationd", "class_fractions", "cutout_qc_figure", "write_fractions"]

logger = logging.getLogger(__name__)

FRACTIONS = "fractions.csv"
"""The cohort table of class fractions (one row per cutout)."""


def class_fractions(labels: np.ndarray, names: Mapping[int, str]) -> list[dict]:
    """One row per class: ``class`` index, ``name``, ``pixels`` and ``fraction`` of all pixels of ``labels``."""
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=max(names, default=0) + 1)
    total = max(int(labels.size), 1)
    return [
        {"class": value, "name": name, "pixels": int(counts[value]), "fraction": round(int(counts[value]) / total, 6)}
        for value, name in sorted(names.items())
    ]


def _csv(rows: Sequence[Mapping], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def cutout_qc_figure(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Mapping[int, tuple[int, int, int]],
    names: Mapping[int, str],
    title: str,
) -> bytes:
    """PNG bytes: the ``[Y, X, Z]`` cutout's slice with the most foreground, alone and with its labels drawn over it.

    The legend gives each class's colour and its fraction of the whole cutout.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    foreground = (labels > 0).reshape(-1, labels.shape[2]).sum(0)
    k = int(np.argmax(foreground)) if foreground.any() else labels.shape[2] // 2
    plane, plane_labels = image[:, :, k], labels[:, :, k].astype(np.int64)
    drawn = visible_colors(colors)
    lookup = np.zeros((max(max(drawn, default=0), int(plane_labels.max(initial=0))) + 1, 4), np.float32)
    for value, rgb in drawn.items():
        if value > 0:
            lookup[value] = (*(c / 255.0 for c in rgb), 0.45)
    low, high = np.percentile(plane, [0.5, 99.5]) if plane.size else (0.0, 1.0)
    scale, dpi = max(1.0, 384 / max(plane.shape)), 100
    width, height = plane.shape[1] * scale / dpi, plane.shape[0] * scale / dpi
    figure = Figure(figsize=(2 * width + 0.3, height + 0.9), dpi=dpi, facecolor="black")
    for column, overlay in enumerate((False, True)):
        axis = figure.add_axes(
            ((0.1 + column * (width + 0.1)) / figure.get_figwidth(), 0.4 / figure.get_figheight(),
             width / figure.get_figwidth(), height / figure.get_figheight())
        )  # fmt: skip
        axis.imshow(plane, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), interpolation="nearest")
        if overlay:
            axis.imshow(lookup[plane_labels], interpolation="nearest")
        axis.set_title(
            f"slice {k + 1} of {labels.shape[2]}" + (", labels" if overlay else ""), color="white", fontsize=8
        )
        axis.axis("off")
    figure.suptitle(title, color="white", fontsize=9, y=1 - 0.08 / figure.get_figheight())
    fractions = {row["class"]: row["fraction"] for row in class_fractions(labels, names)}
    handles = [
        Patch(color=np.array(drawn.get(v, (255, 255, 255))) / 255.0, label=f"{names[v]} {100 * fractions[v]:.1f}%")
        for v in sorted(names)
        if v > 0
    ]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False,
                      labelcolor="white")  # fmt: skip
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="black")
    return buffer.getvalue()


def _suffix_of(source: str) -> str:
    stem = cutout_stem(source)
    return Path(source).name[len(stem) :]


class SaveCutoutSegmentationd(MapTransform):
    """Write each cutout's outputs in ``output_dir`` as one unit (see the module docstring).

    The label map (class indices, ``[1, Y, X, Z]``, in the grid :class:`~neurobundles.data.cutouts.LoadCutoutd`
    gave) is written like its source file, which is read from the tensor's ``filename_or_obj`` meta; ``id_key`` in
    the data names the outputs (else the source's stem). If any write fails, what was written for the cutout is
    removed.

    Args:
        keys: label-map key.
        output_dir: folder for the outputs (created; must be writable).
        table: the bundle's :class:`~neurobundles.labels.LabelTable` in class space (names, colours).
        image_key: the intensity image (``[1, Y, X, Z]``) for the QC picture; None for no picture.
        output_postfix: appended to the id.
        id_key: data key holding a unique name per input.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        table: LabelTable,
        image_key: str | None = "image",
        output_postfix: str = "seg",
        id_key: str = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.names, self.colors = table.names(), table.colors()
        self.image_key, self.output_postfix, self.id_key = image_key, output_postfix, id_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            prediction = d[key]
            source = str(prediction.meta["filename_or_obj"])
            ident = safe_id(d.get(self.id_key) or cutout_stem(source))
            labels = np.asarray(prediction.detach().cpu())[0].round().astype(np.uint8)
            rows = class_fractions(labels, self.names)
            ensure_writable_dir(self.output_dir)
            written: dict[str, Path] = {}
            try:
                target = self.output_dir / f"{ident}_{self.output_postfix}{_suffix_of(source)}"
                written["labels"] = save_cutout_labels(labels, source, target)
                written["fractions"] = self.output_dir / f"{ident}_fractions.csv"
                atomic_write_text(written["fractions"], _csv(rows, ("class", "name", "pixels", "fraction")))
                if self.image_key is not None and self.image_key in d:
                    image = np.asarray(d[self.image_key].detach().cpu())[0]
                    png = cutout_qc_figure(image, labels, self.colors, self.names, f"{ident}: {source}")
                    written["qc"] = self.output_dir / f"{ident}_qc.png"
                    atomic_save(written["qc"], lambda tmp, png=png: Path(tmp).write_bytes(png))
                summary = {
                    "id": ident,
                    "image": str(Path(source).resolve()),
                    "outputs": {kind: path.name for kind, path in written.items()},
                    "shape_yxz": list(labels.shape),
                    "fractions": {row["name"]: row["fraction"] for row in rows},
                    "volumes_mm3": {},
                    "warnings": [part for part in str(d.get("warnings") or "").split(" | ") if part],
                }
                atomic_write_text(self.output_dir / f"{ident}{SUMMARY_SUFFIX}", json.dumps(summary, indent=2) + "\n")
            except BaseException:
                for path in written.values():
                    path.unlink(missing_ok=True)
                raise
            logger.info("%s → %s", source, written["labels"])
        return d


def write_fractions(output_dir: str | Path) -> Path | None:
    """Rebuild ``fractions.csv`` (``id``, a column per class, ``warnings``) from every cutout summary in
    ``output_dir``; returns its path, or None when no summary carries fractions."""
    folder = Path(output_dir)
    summaries = [s for s in read_summaries(folder) if "fractions" in s] if folder.is_dir() else []
    if not summaries:
        return None
    columns = list(dict.fromkeys(name for summary in summaries for name in summary["fractions"]))
    rows = [
        {"id": s["id"], **s["fractions"], "warnings": " | ".join(s.get("warnings", []))}
        for s in sorted(summaries, key=lambda s: str(s["id"]))
    ]
    target = folder / FRACTIONS
    atomic_write_text(target, _csv(rows, ("id", *columns, "warnings")))
    return target
