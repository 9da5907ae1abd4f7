"""Pixel-level segmentation scores with segmentation-models-pytorch's definitions, reduced as MTNeuro reports them.

**Counts** (smp 0.6 ``metrics.get_stats(output, target, mode="multiclass", num_classes=C)``): for each image ``n``
and class ``c`` of integer label maps, ``tp`` = pixels with prediction = truth = c, ``fp`` = predicted c minus
``tp``, ``fn`` = true c minus ``tp``, ``tn`` = all pixels − tp − fp − fn; pixels whose truth is ``ignore_index``
count in none of them. :func:`get_stats` returns the same ``[N, C]`` int64 tensors.

**Scores** (smp's ``f1_score``, ``iou_score``, ``accuracy``): F1 = 2tp / (2tp + fp + fn), IoU = tp / (tp + fp + fn),
accuracy = (tp + tn) / (tp + fp + fn + tn). A 0/0 score (a class in neither map of an image) becomes
``zero_division``, 1.0 by default as in smp. Reductions, as smp names them:

- ``"none"`` / ``None``: one score per image and class, ``[N, C]``;
- ``"micro"``: counts summed over images and classes, one score (multiclass micro F1 = pixel accuracy);
- ``"macro"``: counts summed over images per class, one score per class, then the mean over classes;
- ``"weighted"``: as ``"macro"`` with ``class_weights`` (normalised) and a weighted sum;
- ``"micro-imagewise"``: counts summed over classes per image, one score per image, then the mean over images;
- ``"macro-imagewise"`` / ``"weighted-imagewise"``: one score per image and class, the mean over images, then over
  classes (weighted as smp does: ``mean(score · w / Σw)``).

**MTNeuro's Task 2 report** (``task2_main.py`` with ``eval_reduction: "None"``, the published setting): F1 and IoU
per image and class (reduction ``None``), averaged over the test images → the per-class column; "Avg." is the mean
over all classes, background included, i.e. smp's ``"macro-imagewise"`` (2D 3-class U-Net F1 (0.99 + 0.76 + 0.85) / 3
= 0.87). Accuracy per class the same way; "balanced accuracy (no background)" is the mean of the per-class
accuracies of classes 1..C−1 — MTNeuro's definition, not smp's ``balanced_accuracy`` ((sensitivity +
specificity) / 2). :func:`mtneuro_report` gives all of these; :class:`PixelMetric` and :class:`PixelMetricHandler`
compute any one score for MONAI/ignite evaluators; :class:`PixelScores` scores one image (or 3D sample) at a time,
for per-case tables whose column means are the same imagewise numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

__all__ = [
    "REDUCTIONS",
    "PixelMetric",
    "PixelMetricHandler",
    "PixelScores",
    "accuracy",
    "f1_score",
    "foreground_balanced_accuracy",
    "get_stats",
    "iou_score",
    "mtneuro_report",
    "score",
]

REDUCTIONS = (None, "none", "micro", "macro", "weighted", "micro-imagewise", "macro-imagewise", "weighted-imagewise")

Labels = torch.Tensor | np.ndarray


def _as_tensor(values: Labels) -> torch.Tensor:
    return values.detach() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))


def get_stats(
    output: Labels, target: Labels, num_classes: int, ignore_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``tp, fp, fn, tn`` per image and class (``[N, C]`` int64), as smp's multiclass ``get_stats``.

    Args:
        output: predicted class indices ``[N, ...]`` (integers).
        target: true class indices ``[N, ...]``, same shape.
        num_classes: ``C``; indices run over ``0..C-1``.
        ignore_index: a target value (outside ``0..C-1``) whose pixels are not counted.
    """
    output, target = _as_tensor(output), _as_tensor(target)
    if output.is_floating_point() or target.is_floating_point():
        raise ValueError(f"get_stats takes class indices (integers), got {output.dtype} and {target.dtype}.")
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} must have the same shape.")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index {ignore_index} is a class index (0..{num_classes - 1}); use e.g. -1 or 255.")
    n = output.shape[0]
    output, target = output.reshape(n, -1).long(), target.reshape(n, -1).long()
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    for name, values in (("output", output[keep]), ("target", target[keep])):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds values outside the classes 0..{num_classes - 1}.")
    # one joint histogram of (image, truth, prediction) gives every count
    image = torch.arange(n).unsqueeze(1).expand_as(target)
    joint = (image * num_classes + target) * num_classes + output
    counts = torch.bincount(joint[keep], minlength=n * num_classes * num_classes).reshape(n, num_classes, num_classes)
    tp = torch.diagonal(counts, dim1=1, dim2=2)
    fp = counts.sum(1) - tp
    fn = counts.sum(2) - tp
    tn = keep.sum(1, keepdim=True) - tp - fp - fn
    return tp.contiguous(), fp, fn, tn


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return 2 * tp / (2 * tp + fp + fn)


def _iou(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return tp / (tp + fp + fn)


def _accuracy(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> torch.Tensor:
    return (tp + tn) / (tp + fp + fn + tn)


SCORES: dict[str, Callable[..., torch.Tensor]] = {"f1": _f1, "iou": _iou, "accuracy": _accuracy}


def score(
    name: str,
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Sequence[float] | None = None,
    zero_division: float = 1.0,
) -> torch.Tensor:
    """Score ``name`` (``"f1"``, ``"iou"``, ``"accuracy"``) of ``[N, C]`` counts under an smp reduction."""
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of {sorted(SCORES)}.")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}.")
    if reduction is not None and "weighted" in reduction and class_weights is None:
        raise ValueError(f"the {reduction!r} reduction needs class_weights.")
    metric = SCORES[name]
    tp, fp, fn, tn = (t.double() for t in (tp, fp, fn, tn))
    weights = torch.as_tensor(1.0 if class_weights is None else class_weights, dtype=torch.float64)
    weights = weights / weights.sum()

    def fill(values: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(values, nan=float(zero_division))

    if reduction == "micro":
        return metric(tp.sum(), fp.sum(), fn.sum(), tn.sum())  # smp leaves a 0/0 micro score as NaN
    if reduction == "macro":
        return (fill(metric(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0))) * weights).mean()
    if reduction == "weighted":
        return (fill(metric(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0))) * weights).sum()
    if reduction == "micro-imagewise":
        return fill(metric(tp.sum(1), fp.sum(1), fn.sum(1), tn.sum(1))).mean()
    if reduction in ("macro-imagewise", "weighted-imagewise"):
        return (fill(metric(tp, fp, fn, tn)).mean(0) * weights).mean()
    return fill(metric(tp, fp, fn, tn))


def f1_score(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Sequence[float] | None = None,
    zero_division: float = 1.0,
) -> torch.Tensor:
    """F1 (Dice) as smp's ``f1_score``."""
    return score("f1", tp, fp, fn, tn, reduction, class_weights, zero_division)


def iou_score(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Sequence[float] | None = None,
    zero_division: float = 1.0,
) -> torch.Tensor:
    """IoU (Jaccard) as smp's ``iou_score``."""
    return score("iou", tp, fp, fn, tn, reduction, class_weights, zero_division)


def accuracy(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    reduction: str | None = None,
    class_weights: Sequence[float] | None = None,
    zero_division: float = 1.0,
) -> torch.Tensor:
    """Accuracy as smp's ``accuracy``."""
    return score("accuracy", tp, fp, fn, tn, reduction, class_weights, zero_division)


def foreground_balanced_accuracy(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor, zero_division: float = 1.0
) -> torch.Tensor:
    """MTNeuro's "balanced accuracy (no background)": per-class accuracy averaged over images, then over classes 1.."""
    return accuracy(tp, fp, fn, tn, None, zero_division=zero_division).mean(0)[1:].mean()


def mtneuro_report(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    tn: torch.Tensor,
    class_names: Sequence[str] | None = None,
    zero_division: float = 1.0,
) -> dict[str, float]:
    """MTNeuro's Task 2 numbers from ``[N, C]`` counts of the test images.

    Keys: ``accuracy/<class>``, ``balanced_accuracy_no_background``, ``f1/<class>``, ``f1/mean``, ``iou/<class>``,
    ``iou/mean`` (imagewise, as published; the means are smp's ``"macro-imagewise"``), and the same F1/IoU from
    counts pooled over all images, ``f1_pooled/<class>`` and ``iou_pooled/<class>`` (smp ``"macro"`` before the
    class mean).
    """
    num_classes = tp.shape[1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes.")
    report: dict[str, float] = {}
    per_image = {name: score(name, tp, fp, fn, tn, None, None, zero_division).mean(0) for name in SCORES}
    for c, cls in enumerate(names):
        report[f"accuracy/{cls}"] = float(per_image["accuracy"][c])
    report["balanced_accuracy_no_background"] = float(per_image["accuracy"][1:].mean())
    for name in ("f1", "iou"):
        for c, cls in enumerate(names):
            report[f"{name}/{cls}"] = float(per_image[name][c])
        report[f"{name}/mean"] = float(per_image[name].mean())
        pooled = torch.nan_to_num(SCORES[name](*(t.double().sum(0) for t in (tp, fp, fn, tn))), nan=zero_division)
        for c, cls in enumerate(names):
            report[f"{name}_pooled/{cls}"] = float(pooled[c])
    return report


def _as_labels(values: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Channel-first ``[B, K, ...]`` → class indices ``[B, ...]``: K = 1 holds indices, K = C scores or one-hot."""
    if values.ndim < 3:
        raise ValueError(f"expected channel-first [B, C, ...] tensors, got shape {tuple(values.shape)}.")
    if values.shape[1] == 1:
        return values[:, 0].round().long() if values.is_floating_point() else values[:, 0].long()
    if values.shape[1] == num_classes:
        return values.argmax(1)
    raise ValueError(
        f"expected 1 channel of class indices or {num_classes} channels of scores, got {values.shape[1]} channels."
    )


class PixelMetric(CumulativeIterationMetric):
    """One smp-style score over all images seen, for MONAI evaluators (per-image counts are accumulated).

    Inputs are channel-first batches: ``y_pred`` ``[B, 1, ...]`` class indices or ``[B, C, ...]`` scores/one-hot
    (argmax taken), ``y`` the same.

    Args:
        num_classes: ``C``.
        metric: ``"f1"``, ``"iou"`` or ``"accuracy"``.
        reduction: an smp reduction (module docstring); MTNeuro's averages are ``"macro-imagewise"``.
        class_index: report this class only: its imagewise mean (``"macro-imagewise"``, ``"none"``) or its score
            from pooled counts (``"macro"``).
        zero_division: value of a 0/0 score.
        ignore_index: a label value left out of the counts.
    """

    def __init__(
        self,
        num_classes: int,
        metric: str = "f1",
        reduction: str | None = "macro-imagewise",
        class_index: int | None = None,
        zero_division: float = 1.0,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if metric not in SCORES:
            raise ValueError(f"unknown score {metric!r}; choose one of {sorted(SCORES)}.")
        if class_index is not None and reduction not in ("macro-imagewise", "macro", "none", None):
            raise ValueError("class_index works with the 'macro-imagewise', 'macro' or 'none' reductions.")
        if class_index is not None and not 0 <= class_index < num_classes:
            raise ValueError(f"class_index {class_index} is not a class of 0..{num_classes - 1}.")
        self.num_classes, self.metric, self.reduction = num_classes, metric, reduction
        self.class_index, self.zero_division, self.ignore_index = class_index, zero_division, ignore_index

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("PixelMetric needs the labels y.")
        counts = get_stats(
            _as_labels(y_pred, self.num_classes), _as_labels(y, self.num_classes), self.num_classes, self.ignore_index
        )
        return torch.stack(counts, dim=-1)  # [B, C, 4]

    def counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Accumulated ``tp, fp, fn, tn``, ``[N, C]`` each."""
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            raise ValueError("PixelMetric has seen no images yet.")
        tp, fp, fn, tn = buffer.unbind(-1)
        return tp, fp, fn, tn

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        tp, fp, fn, tn = self.counts()
        if self.class_index is None:
            return score(self.metric, tp, fp, fn, tn, self.reduction, zero_division=self.zero_division).float()
        c = self.class_index
        if self.reduction == "macro":
            pooled = SCORES[self.metric](*(t[:, c].double().sum() for t in (tp, fp, fn, tn)))
            return torch.nan_to_num(pooled, nan=self.zero_division).float()
        per_image = score(self.metric, tp, fp, fn, tn, None, zero_division=self.zero_division)
        return per_image[:, c].mean().float()

    def report(self, class_names: Sequence[str] | None = None) -> dict[str, float]:
        """:func:`mtneuro_report` of the images seen."""
        return mtneuro_report(*self.counts(), class_names=class_names, zero_division=self.zero_division)


class PixelMetricHandler(IgniteMetricHandler):
    """An ignite metric computing a :class:`PixelMetric` over an evaluator's run (like MONAI's ``MeanDice``).

    Args:
        num_classes, metric, reduction, class_index, zero_division, ignore_index: as :class:`PixelMetric`.
        output_transform: engine output → ``(y_pred, y)``, e.g. ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: keep the per-image counts ``[N, C, 4]`` in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        num_classes: int,
        metric: str = "f1",
        reduction: str | None = "macro-imagewise",
        class_index: int | None = None,
        zero_division: float = 1.0,
        ignore_index: int | None = None,
        output_transform: Callable[[Any], Any] = lambda x: x,
        save_details: bool = False,
    ) -> None:
        metric_fn = PixelMetric(num_classes, metric, reduction, class_index, zero_division, ignore_index)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PixelScores:
    """MTNeuro's scores of one case (a 2D image or a 3D sample): a per-case metric function for report tables.

    ``scores(prediction, reference)`` takes class-index maps ``[1, ...]`` (or ``[...]``; float indices are rounded)
    and returns ``accuracy/<class>``, ``balanced_accuracy_no_background``, ``f1/<class>``, ``f1/mean``,
    ``f1/foreground``, ``iou/<class>``, ``iou/mean``, ``iou/foreground``. A 0/0 score is ``zero_division`` (1.0, as
    smp), so every value is a number and the mean of a column over cases is MTNeuro's imagewise number:
    ``f1/mean`` averages to smp's ``"macro-imagewise"`` F1, ``f1/<class>`` to the published per-class column
    (:func:`mtneuro_report` of the stacked counts gives the same values).

    Args:
        class_names: the class names, in class-index order (a list, or a mapping ``{"0": name, ...}``).
        zero_division: value of a 0/0 score.
    """

    def __init__(self, class_names: Sequence[str] | dict, zero_division: float = 1.0) -> None:
        if isinstance(class_names, dict):
            class_names = [class_names[k] for k in sorted(class_names, key=int)]
        self.class_names = [str(name) for name in class_names]
        self.zero_division = zero_division

    def __call__(self, prediction: Labels, reference: Labels, spacing: Any = None) -> dict[str, float]:
        output, target = _as_tensor(prediction), _as_tensor(reference)
        output = output.round().long() if output.is_floating_point() else output.long()
        target = target.round().long() if target.is_floating_point() else target.long()
        counts = get_stats(output.reshape(1, -1), target.reshape(1, -1), len(self.class_names))
        report = mtneuro_report(*counts, class_names=self.class_names, zero_division=self.zero_division)
        scores = {key: value for key, value in report.items() if "_pooled/" not in key}
        for name in ("f1", "iou"):
            scores[f"{name}/foreground"] = float(np.mean([scores[f"{name}/{c}"] for c in self.class_names[1:]]))
        order = ["accuracy/", "balanced", "f1/", "iou/"]
        return dict(
            sorted(scores.items(), key=lambda item: next(i for i, p in enumerate(order) if item[0].startswith(p)))
        )
