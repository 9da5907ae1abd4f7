"""What a classifier writes: per-input tile tables with class probabilities, confusion matrices (CSV and PNG).

For each input ``<id>`` an inference run writes ``<id>_regions.csv`` (one row per tile: its corner, the predicted
class and every class probability) and then ``<id>_summary.json`` (tiles per class, the majority class, mean
probabilities, and the output files), each atomically. The summary is written last, so its presence means the
input is complete: a resumed run skips it, a killed one leaves only hidden temporaries.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from neurobundles.atomic import atomic_save, atomic_write_text

from .subject import SUMMARY_SUFFIX, safe_id

__all__ = [
    "TILE_TABLE_SUFFIX",
    "SaveTileClassesd",
    "class_counts_table",
    "confusion_matrix_csv",
    "save_confusion_matrix_png",
    "tile_classes_csv",
]

TILE_TABLE_SUFFIX = "_regions.csv"


def _array(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def tile_classes_csv(probabilities: np.ndarray, origins: np.ndarray, class_names: Sequence[str]) -> str:
    """``z, y, x, label, name, p_<class>...`` for ``probabilities [C, N]`` and tile corners ``origins [N, 3]``."""
    if probabilities.shape[0] != len(class_names) or probabilities.shape[1] != len(origins):
        raise ValueError(
            f"probabilities {probabilities.shape} do not match {len(class_names)} classes and {len(origins)} tiles."
        )
    predicted = probabilities.argmax(axis=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["z", "y", "x", "label", "name", *(f"p_{name}" for name in class_names)])
    for (z, y, x), label, column in zip(origins.tolist(), predicted.tolist(), probabilities.T):
        writer.writerow([z, y, x, label, class_names[label], *(f"{p:.6f}" for p in column)])
    return buffer.getvalue()


class SaveTileClassesd(MapTransform):
    """Write an input's tile table and summary (see the module docstring) from its class probabilities.

    Args:
        keys: key of the probabilities ``[C, N]`` (softmax over the classes of each of N tiles).
        output_dir: folder for the files.
        class_names: names of the classes, in index order.
        tiles_key: key of the tiles' ``[N, 3]`` (z, y, x) corners in the input.
        source_key: key of the input file's path.
        id_key: key of the input's name.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        class_names: Sequence[str] | Mapping[Any, str],
        tiles_key: str = "image_tiles",
        source_key: str = "image_source",
        id_key: str = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        if isinstance(class_names, Mapping):
            class_names = [str(name) for _, name in sorted((int(k), v) for k, v in class_names.items())]
        self.class_names = [str(name) for name in class_names]
        self.tiles_key, self.source_key, self.id_key = tiles_key, source_key, id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            ident = safe_id(d[self.id_key])
            probabilities = _array(d[key]).astype(np.float64)
            origins = _array(d[self.tiles_key]).astype(np.int64).reshape(-1, 3)
            table = f"{ident}{TILE_TABLE_SUFFIX}"
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / table, tile_classes_csv(probabilities, origins, self.class_names))
            counts = np.bincount(probabilities.argmax(axis=0), minlength=len(self.class_names))
            summary = {
                "id": ident,
                "image": str(Path(str(d.get(self.source_key, ""))).resolve()),
                "tiles": int(probabilities.shape[1]),
                "counts": {name: int(n) for name, n in zip(self.class_names, counts)},
                "majority": self.class_names[int(counts.argmax())],
                "mean_probabilities": {n: round(float(p), 6) for n, p in zip(self.class_names, probabilities.mean(1))},
                "outputs": {"regions": table},
            }
            if d.get("warnings"):
                summary["warnings"] = [part for part in str(d["warnings"]).split(" | ") if part]
            atomic_write_text(self.output_dir / f"{ident}{SUMMARY_SUFFIX}", json.dumps(summary, indent=2) + "\n")
        return d


def class_counts_table(summaries: Sequence[Mapping[str, Any]], class_names: Sequence[str]) -> str:
    """``id, tiles, majority, <class>...`` (tiles per predicted class), one row per input summary."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "tiles", "majority", *class_names])
    for summary in sorted(summaries, key=lambda s: str(s.get("id", ""))):
        counts = summary.get("counts", {})
        writer.writerow([summary.get("id", ""), summary.get("tiles", ""), summary.get("majority", ""),
                         *(counts.get(name, 0) for name in class_names)])  # fmt: skip
    return buffer.getvalue()


def confusion_matrix_csv(matrix: np.ndarray, class_names: Sequence[str]) -> str:
    """Rows: true class, columns: predicted class, with the names as headers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, np.asarray(matrix).tolist()):
        writer.writerow([name, *row])
    return buffer.getvalue()


def save_confusion_matrix_png(
    path: str | Path, matrix: np.ndarray, class_names: Sequence[str], title: str = ""
) -> Path:
    """A confusion matrix picture (counts and row fractions), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, np.maximum(totals, 1), dtype=np.float64)
    size = 1.2 + 0.9 * len(class_names)
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shown = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if fractions[i, j] > 0.6 else "black"
            axes.text(
                j, i, f"{counts[i, j]}\n{fractions[i, j]:.2f}", ha="center", va="center", color=colour, fontsize=9
            )
    axes.set_xticks(range(len(class_names)), class_names)
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axes.set_title(f"{title + ': ' if title else ''}accuracy {accuracy:.3f} ({counts.sum()} images)", fontsize=10)
    figure.colorbar(shown, ax=axes, shrink=0.8, label="fraction of the true class")
    atomic_save(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return Path(path)
