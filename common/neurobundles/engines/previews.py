"""A picture of what a 2D network sees and answers while it trains: image | truth | prediction, a few slices.

MRISeg looked at its training this way (untrained: noise; after an epoch: the tumour, coarsely). Every N
iterations :class:`SlicePreview` draws the current batch's slices — tumour slices first — as rows of three
panels, the truth and the prediction drawn over the image, and replaces ``training_preview.png`` atomically
(``keep=True`` also keeps ``previews/iteration_<i>.png``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from neurobundles.atomic import atomic_save

__all__ = ["SlicePreview", "preview_figure"]


def _array(value: Any) -> np.ndarray:
    tensor = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
    return tensor.detach().float().cpu().numpy()


def _items(engine: Engine, keys: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Per-slice ``{key: (C, H, W) array}`` from a trainer's output (decollated list, or one batch dict)."""
    output = engine.state.output
    rows = output if isinstance(output, (list, tuple)) else [output]
    items: list[dict[str, np.ndarray]] = []
    for row in rows:
        if not isinstance(row, Mapping) or any(key not in row for key in keys):
            continue
        arrays = {key: _array(row[key]) for key in keys}
        if arrays[keys[0]].ndim == 4:  # one batch dict: split it
            items += [{key: arrays[key][i] for key in keys} for i in range(arrays[keys[0]].shape[0])]
        else:
            items.append(arrays)
    return items


def preview_figure(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    title: str,
    captions: Sequence[str] | None = None,
) -> bytes:
    """PNG bytes of one row per slice: the image, the truth over it (green), the prediction over it (red)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = len(images)
    figure = Figure(figsize=(7.5, 2.5 * rows + 0.4), dpi=100, facecolor="black")
    for row, (image, truth, prediction) in enumerate(zip(images, truths, predictions)):
        low, high = np.percentile(image, [1, 99.5]) if image.any() else (0.0, 1.0)
        panels = (("image", None, None), ("truth", truth, (0.1, 0.9, 0.2)), ("prediction", prediction, (1.0, 0.2, 0.1)))
        for column, (name, mask, colour) in enumerate(panels):
            axis = figure.add_subplot(rows, 3, row * 3 + column + 1)
            axis.imshow(image.T, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), interpolation="nearest")
            if mask is not None:
                overlay = np.zeros((*mask.shape, 4), dtype=np.float32)
                overlay[mask > 0] = (*colour, 0.45)
                axis.imshow(overlay.transpose(1, 0, 2), interpolation="nearest")
            label = name if captions is None or column else f"{name}: {captions[row]}"
            axis.set_title(label, color="white", fontsize=8)
            axis.axis("off")
    figure.suptitle(title, color="white", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.4 / figure.get_figheight()))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="black")
    return buffer.getvalue()


class SlicePreview:
    """Every ``interval`` iterations, draw image | truth | prediction for up to ``rows`` slices of the batch.

    Reads the trainer's output after its post-processing (``pred`` thresholded into a mask); a prediction that
    is not binary (logits: no post-processing) is drawn where its sigmoid exceeds 0.5. Slices are drawn as
    axial LPS slices are read: anterior up, the patient's right on the left.

    Args:
        output_dir: folder of ``training_preview.png`` (the bundle's ``output_dir``).
        interval: iterations between pictures (0 or less: none).
        rows: slices per picture; tumour slices are chosen first.
        channel: the image channel to draw (the FLAIR shows tumours best).
        keep: also keep every picture as ``previews/iteration_<i>.png``.
        filename: name of the picture that is replaced each time.
        image_key, label_key, pred_key: keys of the trainer's output.
    """

    def __init__(
        self,
        output_dir: str | Path,
        interval: int = 100,
        rows: int = 4,
        channel: int = 0,
        keep: bool = False,
        filename: str = "training_preview.png",
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
    ) -> None:
        self.output_dir, self.interval, self.rows, self.channel = Path(output_dir), int(interval), int(rows), channel
        self.keep, self.filename = keep, filename
        self.keys = (image_key, label_key, pred_key)
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        if self.interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self._draw)

    def _draw(self, engine: Engine) -> None:
        items = _items(engine, self.keys)
        if not items:
            return
        image_key, label_key, pred_key = self.keys
        order = sorted(range(len(items)), key=lambda i: -float(items[i][label_key].sum()))[: self.rows]
        chosen = [items[i] for i in order]
        channel = min(self.channel, chosen[0][image_key].shape[0] - 1)
        predictions = []
        for item in chosen:
            pred = item[pred_key][0]
            if not np.isin(pred, (0.0, 1.0)).all():
                pred = 1.0 / (1.0 + np.exp(-pred)) > 0.5
            predictions.append(pred)
        captions = [f"{int(item[label_key].sum())} tumour px" for item in chosen]
        png = preview_figure(
            [item[image_key][channel] for item in chosen],
            [item[label_key][0] for item in chosen],
            predictions,
            f"iteration {engine.state.iteration}, epoch {engine.state.epoch}",
            captions,
        )
        targets = [self.output_dir / self.filename]
        if self.keep:
            targets.append(self.output_dir / "previews" / f"iteration_{engine.state.iteration:07d}.png")
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_save(target, lambda tmp: Path(tmp).write_bytes(png))
        self.written.append(targets[-1])
