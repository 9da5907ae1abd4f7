"""MTNeuro Task 1 and Task 3 benchmarks: fetch the data, the multi-seed Task 1 table, the Task 3 readout table.

``python -m neurobundles.tools.mtneuro_benchmark <command>`` (or ``neurobundles mtneuro <command>``):

- ``fetch``: download (or check) every cutout of the ROI settings and the Task 3 cubes into the cache, and report
  how the tiles are labelled (tiles per region, tiles labelled by their cube outside the annotated slices, tiles
  whose annotation disagrees with their cube).
- ``benchmark``: the paper's Table 1. Each method (``supervised``, ``mixup``, ``byol``) is trained with the bundle
  ``mtneuro_task1_resnet18`` for each training setting (ROI-C1, ROI-C3) and seed (1, 100, 350, 631, 872), then
  tested in every setting sharing its training cubes (a ROI-C1 model in ROI-C1 and ROI-C2); ``pca`` and ``nmf``
  (256 components and a linear classifier, one run) need no seeds. Writes ``results.csv`` (one row per run and
  test), ``table1.csv`` (mean ± std over seeds beside the published values) and ``failures.csv``; every run keeps
  its folder (``<method>/<setting>/seed_<seed>/``: checkpoints, logs, confusion matrices) and its ``done.json``,
  so an interrupted benchmark resumes where it stopped and a failing run does not stop the others.
- ``readout``: the paper's Table 3. Frozen embeddings of the Task 3 images (cube set A, 360 slices, 128² quadrants
  at the task's resolution) from every trained run of a setting, and PCA/NMF embeddings, each regressed linearly
  onto the five semantic features; writes ``table3_<setting>.csv`` (methods × features, mean ± std over seeds),
  ``readout_<setting>.csv`` (every R²), ``features.csv`` and ``scatter_<method>.png`` (UMAP if ``umap-learn`` is
  installed, else PCA, coloured by region and by each feature).
- ``timing``: seconds per tile of a training step, a BYOL step and inference on a device, and the epoch times
  they imply (``docs/benchmarks.md``).

Accuracies are those of the last epoch's weights by default (``checkpoint="final"``, as the MTNeuro reference
reports them); ``checkpoint="best"`` uses the weights with the best validation accuracy.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neurobundles import zoo
from neurobundles.atomic import atomic_write_text
from neurobundles.mtneuro import REGIONS, label_report, prefetch_task1, resolve_config, task1_datalist, task1_images
from neurobundles.mtneuro.features import FEATURES
from neurobundles.networks import load_pretrained
from neurobundles.networks.byol import XRAY_MEAN, XRAY_STD, embed_images

__all__ = [
    "BUNDLE",
    "LEARNED",
    "PUBLISHED_TASK1",
    "PUBLISHED_TASK3",
    "SEEDS",
    "benchmark",
    "fetch",
    "readout",
    "run_baseline",
    "run_learned",
    "timing",
]

logger = logging.getLogger("neurobundles.mtneuro")

BUNDLE = "mtneuro_task1_resnet18"
SEEDS = (1, 100, 350, 631, 872)
LEARNED = ("supervised", "mixup", "byol")
BASELINES = ("pca", "nmf")
SETTINGS = ("ROI-C1", "ROI-C2", "ROI-C3")

PUBLISHED_TASK1: dict[str, dict[str, tuple[float, float | None]]] = {
    "supervised": {"ROI-C1": (0.88, 0.03), "ROI-C2": (0.77, 0.03), "ROI-C3": (0.88, 0.02)},
    "mixup": {"ROI-C1": (0.90, 0.04), "ROI-C2": (0.78, 0.03), "ROI-C3": (0.90, 0.02)},
    "byol": {"ROI-C1": (0.88, 0.02), "ROI-C2": (0.76, 0.02), "ROI-C3": (0.97, 0.01)},
    "myow": {"ROI-C1": (0.90, 0.02), "ROI-C2": (0.78, 0.05), "ROI-C3": (0.98, 0.01)},
    "myow-m": {"ROI-C1": (0.94, 0.02), "ROI-C2": (0.78, 0.03), "ROI-C3": (0.98, 0.01)},
    "pca": {"ROI-C1": (0.59, None), "ROI-C2": (0.25, None), "ROI-C3": (0.07, None)},
    "nmf": {"ROI-C1": (0.62, None), "ROI-C2": (0.27, None), "ROI-C3": (0.50, None)},
}
"""MTNeuro Table 1: accuracy mean (and std over 5 seeds) per method and setting."""

PUBLISHED_TASK3: dict[str, dict[str, tuple[float, ...]]] = {
    "ROI-C1": {
        "supervised": (0.77, 0.94, 0.67, 0.61, 0.48),
        "mixup": (0.82, 0.95, 0.71, 0.67, 0.47),
        "byol": (0.85, 0.94, 0.75, 0.69, 0.49),
        "myow": (0.85, 0.94, 0.74, 0.69, 0.50),
        "myow-m": (0.87, 0.95, 0.77, 0.69, 0.51),
        "pca": (0.75, 0.82, 0.55, 0.47, 0.31),
        "nmf": (0.81, 0.85, 0.59, 0.55, 0.34),
    },
    "ROI-C3": {
        "supervised": (0.79, 0.94, 0.73, 0.63, 0.49),
        "mixup": (0.75, 0.88, 0.64, 0.54, 0.37),
        "byol": (0.88, 0.96, 0.79, 0.73, 0.53),
        "myow": (0.88, 0.96, 0.79, 0.72, 0.52),
        "myow-m": (0.87, 0.96, 0.78, 0.72, 0.53),
        "pca": (0.75, 0.82, 0.53, 0.46, 0.29),
        "nmf": (0.75, 0.83, 0.56, 0.49, 0.31),
    },
}
"""MTNeuro Table 3: mean R² of the linear readouts (vessels, axons, cell count, cell size, NN distance)."""

METHOD_TITLES = {"supervised": "Supervised", "mixup": "Sup w/ Mixup", "byol": "BYOL", "myow": "MYOW",
                 "myow-m": "MYOW-m", "pca": "PCA", "nmf": "NMF"}  # fmt: skip


def _names(value: str | Iterable[Any] | None, default: Sequence[Any]) -> list[Any]:
    """A list from ``"a,b"`` (shell), a tuple (Fire parses ``1,100`` as one), a single value or ``None``."""
    if value is None:
        return list(default)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def _reason(error: BaseException) -> str:
    """The innermost message of an error chain (MONAI wraps what a config expression raised)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())
    return path


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return ""
    array = np.asarray(values, dtype=np.float64)
    return f"{array.mean():.2f}" if len(array) == 1 else f"{array.mean():.2f} ± {array.std():.2f}"


# ---------------------------------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------------------------------
def fetch(
    cache: str | None = None,
    settings: str | Sequence[str] | None = None,
    task3: bool = True,
    task_config: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
) -> dict[str, Any]:
    """Download (or check) the cutouts of the ROI settings (default: all) and the Task 3 cubes; report labels.

    Args:
        cache: cache folder (default ``$NEUROBUNDLES_HOME/mtneuro``); copy it to machines without network.
        settings: "ROI-C1,ROI-C2,ROI-C3" or a subset.
        task3: also the Task 3 ``pixel_labels``.
        task_config: task config JSON (default the shipped ``task1_rois.json``).
        retries, backoff: per-request tries and first wait in seconds.
    """
    config = resolve_config(task_config)
    chosen = _names(settings, config.settings)
    paths = prefetch_task1(cache, chosen, config=config, task3=task3, retries=retries, backoff=backoff)
    report: dict[str, Any] = {"files": len(paths), "settings": {}}
    for setting in chosen:
        for split in ("train", "val", "test"):
            items = task1_datalist(setting, split, config, cache, offline=True, verify=False)
            summary = label_report(items, config.regions)
            report["settings"][f"{setting}/{split}"] = summary
            note = f", {summary['nominal']} labelled by their cube (no annotation)" if summary["nominal"] else ""
            odd = f", annotation differs from the cube: {summary['disagreements']}" if summary["disagreements"] else ""
            print(f"{setting} {split}: {summary['tiles']} tiles {summary['per_region']}{note}{odd}")
    print(f"{len(paths)} cutouts cached in {cache or 'the default cache'}")
    return report


# ---------------------------------------------------------------------------------------------------------------
# Task 1
# ---------------------------------------------------------------------------------------------------------------
def _accuracy(folder: Path) -> dict[str, float]:
    report = json.loads((folder / "accuracy.json").read_text())
    return {"accuracy": float(report["accuracy"]), "balanced_accuracy": float(report["balanced_accuracy"])}


def run_learned(
    method: str,
    setting: str,
    seed: int,
    output: str | Path,
    bundle: str | Path = BUNDLE,
    task_config: str | None = None,
    cache: str | None = None,
    offline: bool = False,
    checkpoint: str = "final",
    mixup_prob: float = 0.5,
    **overrides: Any,
) -> dict[str, dict[str, float]]:
    """Train one method for one setting and seed with the bundle, test it; returns ``{test setting: scores}``.

    A run whose ``done.json`` exists is not repeated (delete its folder to redo it).
    """
    if method not in LEARNED:
        raise ValueError(f"method must be one of {LEARNED}, got {method!r}.")
    if checkpoint not in ("final", "best"):
        raise ValueError(f"checkpoint must be 'final' or 'best', got {checkpoint!r}.")
    run_dir = Path(output) / method / setting / f"seed_{seed}"
    done = run_dir / "done.json"
    if done.is_file():
        return json.loads(done.read_text())["results"]
    config = resolve_config(task_config)
    common = {
        "task_config_file": task_config,
        "cache_dir": cache,
        "offline": offline,
        "setting": setting,
        "seed": int(seed),
        "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir / "eval"),
        **overrides,
    }
    start = time.perf_counter()
    if method == "byol":
        zoo.run_workflow(bundle, ["train", "byol"], **common)
        zoo.run_workflow(bundle, ["train", "linear_probe"], **common)
        weights = run_dir / "models" / "model.pt"  # the probe on the final encoder
    else:
        extra = {"mixup_prob": float(mixup_prob)} if method == "mixup" else {}
        zoo.run_workflow(bundle, "train", **common, **extra)
        weights = run_dir / "models" / ("model_final.pt" if checkpoint == "final" else "model.pt")
    results = {}
    for test in config.evaluations(setting):
        zoo.run_workflow(bundle, ["train", "evaluate"], **common, eval_setting=test, eval_split="test",
                         eval_quadrants=method == "byol", ckpt_path=str(weights))  # fmt: skip
        results[test] = _accuracy(run_dir / "eval" / f"{test}_test")
    record = {"method": method, "setting": setting, "seed": int(seed), "checkpoint": checkpoint,
              "seconds": round(time.perf_counter() - start, 1), "results": results}  # fmt: skip
    atomic_write_text(done, json.dumps(record, indent=2) + "\n")
    return results


def _downsampled(images: np.ndarray, factor: int) -> np.ndarray:
    """uint8 ``[N, 1, H, W]`` → float32 in [0, 1], area-downsampled by ``factor`` (as the bundle's preprocessing)."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if factor > 1:
        x = F.interpolate(x, scale_factor=1.0 / factor, mode="area")
    return x.numpy()


def run_baseline(
    kind: str,
    setting: str,
    output: str | Path,
    task_config: str | None = None,
    cache: str | None = None,
    offline: bool = False,
    n_components: int = 256,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """PCA or NMF of the training tiles and a linear classifier; tested in every setting sharing the training cubes."""
    from neurobundles.engines.classification import classification_scores
    from neurobundles.mtneuro.readout import baseline_classification
    from neurobundles.outputs.classification import confusion_matrix_csv, save_confusion_matrix_png

    run_dir = Path(output) / kind / setting
    done = run_dir / "done.json"
    if done.is_file():
        return json.loads(done.read_text())["results"]
    config = resolve_config(task_config)
    train_images, train_labels = task1_images(task1_datalist(setting, "train", config, cache, offline))
    train = _downsampled(train_images, config.downsample)
    start = time.perf_counter()
    results = {}
    for test in config.evaluations(setting):
        test_images, test_labels = task1_images(task1_datalist(test, "test", config, cache, offline))
        test_x = _downsampled(test_images, config.downsample)
        _, matrix = baseline_classification(kind, train, train_labels, test_x, test_labels, n_components,
                                            len(config.regions), seed)  # fmt: skip
        scores = classification_scores(matrix, config.regions)
        folder = run_dir / f"{test}_test"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "accuracy.json", json.dumps({**scores, "confusion_matrix": matrix.tolist()}) + "\n")
        atomic_write_text(folder / "confusion_matrix.csv", confusion_matrix_csv(matrix, config.regions))
        save_confusion_matrix_png(folder / "confusion_matrix.png", matrix, config.regions, f"{kind.upper()} {test}")
        results[test] = {"accuracy": scores["accuracy"], "balanced_accuracy": scores["balanced_accuracy"]}
    record = {"method": kind, "setting": setting, "seconds": round(time.perf_counter() - start, 1), "results": results}
    atomic_write_text(done, json.dumps(record, indent=2) + "\n")
    return results


def _table1(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[list[str]]:
    table = []
    for method in methods:
        cells = []
        for setting in SETTINGS:
            ours = [r["accuracy"] for r in rows if r["method"] == method and r["tested_in"] == setting]
            published = PUBLISHED_TASK1.get(method, {}).get(setting)
            paper = (
                ""
                if published is None
                else _mean_std([published[0]]) + (f" ± {published[1]:.2f}" if published[1] is not None else "")
            )
            cells += [_mean_std(ours), str(len(ours)) if ours else "0", paper]
        table.append([METHOD_TITLES.get(method, method), *cells])
    return table


def benchmark(
    methods: str | Sequence[str] = ("supervised", "mixup", "byol", "pca", "nmf"),
    settings: str | Sequence[str] = ("ROI-C1", "ROI-C3"),
    seeds: str | Sequence[int] = SEEDS,
    output: str = "mtneuro_benchmark",
    bundle: str = BUNDLE,
    task_config: str | None = None,
    cache: str | None = None,
    offline: bool = False,
    checkpoint: str = "final",
    mixup_prob: float = 0.5,
    n_components: int = 256,
    **overrides: Any,
) -> list[list[str]]:
    """The Task 1 table: every method × training setting × seed, tested in its settings (see the module docstring).

    Args:
        methods: "supervised,mixup,byol,pca,nmf" or a subset.
        settings: training settings ("ROI-C1" gives the ROI-C1 and ROI-C2 columns, "ROI-C3" the ROI-C3 one).
        seeds: "1,100,350,631,872" (the paper's) or others.
        output: folder of the runs and tables.
        bundle: the bundle (name or folder).
        task_config: task config JSON (default the shipped one).
        cache: cutout cache folder.
        offline: read only the cache.
        checkpoint: "final" (the last epoch, as the paper) or "best" (best validation accuracy).
        mixup_prob: probability of mixing each sample for ``mixup`` (the paper's sweep: 0.01-0.7).
        n_components: PCA/NMF components.
        overrides: any bundle config id (``device``, ``max_epochs``, ``batch_size``, ``network_def#channels``...).

    Returns:
        the rows of ``table1.csv``.
    """
    root = Path(output)
    rows: list[dict[str, Any]] = []
    failures: list[list[str]] = []
    chosen = [m.lower() for m in _names(methods, ())]
    unknown = sorted(set(chosen) - set(LEARNED) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {LEARNED + BASELINES} (MYOW is not implemented).")

    def record(method: str, setting: str, seed: Any, results: Mapping[str, Mapping[str, float]]) -> None:
        for tested_in, scores in results.items():
            rows.append({"method": method, "trained_on": setting, "tested_in": tested_in, "seed": seed, **scores})
        _write_csv(root / "results.csv", ["method", "trained_on", "tested_in", "seed", "accuracy", "balanced_accuracy"],
                   ([r["method"], r["trained_on"], r["tested_in"], r["seed"], f"{r['accuracy']:.4f}",
                     f"{r['balanced_accuracy']:.4f}"] for r in rows))  # fmt: skip

    config = resolve_config(task_config)
    trained_on = [str(s) for s in _names(settings, ())]
    needed = sorted({test for setting in trained_on for test in config.evaluations(setting)} | set(trained_on))
    if offline:  # every run needs the same cutouts: say now, once, what is missing
        for setting in needed:
            for split in ("train", "val", "test"):
                task1_datalist(setting, split, config, cache, offline=True, verify=False)
    else:
        prefetch_task1(cache, needed, config=config, task3=False)
    for method in chosen:
        for setting in trained_on:
            runs = [None] if method in BASELINES else [int(s) for s in _names(seeds, ())]
            for seed in runs:
                name = f"{method} {setting}" + ("" if seed is None else f" seed {seed}")
                logger.info("MTNeuro Task 1: %s", name)
                try:
                    if method in BASELINES:
                        results = run_baseline(method, setting, root, task_config, cache, offline, n_components)
                    else:
                        results = run_learned(method, setting, seed, root, bundle, task_config, cache, offline,
                                              checkpoint, mixup_prob, **overrides)  # fmt: skip
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as error:  # one run's failure does not stop the others
                    reason = _reason(error)
                    logger.error("neurobundles: error: %s failed: %s", name, reason)
                    failures.append([method, setting, "" if seed is None else str(seed), reason])
                    _write_csv(root / "failures.csv", ["method", "setting", "seed", "error"], failures)
                    logger.debug("%s", traceback.format_exc())
                    continue
                record(method, setting, "" if seed is None else seed, results)
    if not failures:
        (root / "failures.csv").unlink(missing_ok=True)
    header = ["Method"] + [f"{s} {what}" for s in SETTINGS for what in ("ours", "runs", "paper")]
    table = _table1(rows, chosen)
    _write_csv(root / "table1.csv", header, table)
    print(_format(header, table))
    if failures:
        print(f"{len(failures)} run(s) failed: see {root / 'failures.csv'}", file=sys.stderr)
    return table


def _format(header: Sequence[str], table: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *table]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Task 3
# ---------------------------------------------------------------------------------------------------------------
def _trained_runs(runs: str | Path, setting: str, checkpoint: str) -> dict[str, list[tuple[str, Path]]]:
    """``{method: [(seed, weights), ...]}`` of the benchmark runs trained for ``setting`` under ``runs``."""
    found: dict[str, list[tuple[str, Path]]] = {}
    for method in LEARNED:
        for run in sorted((Path(runs) / method / setting).glob("seed_*")):
            name = "model.pt" if method == "byol" or checkpoint == "best" else "model_final.pt"
            if (run / "done.json").is_file() and (run / "models" / name).is_file():
                found.setdefault(method, []).append((run.name.removeprefix("seed_"), run / "models" / name))
    return found


def _embed_runs(
    weights: Mapping[str, Sequence[tuple[str, Path]]], images: torch.Tensor, bundle: str, device: str,
    overrides: Mapping[str, Any],
) -> dict[str, list[tuple[str, np.ndarray]]]:  # fmt: skip
    parser = zoo.bundle_parser(bundle, "inference", **overrides)
    embeddings: dict[str, list[tuple[str, np.ndarray]]] = {}
    for method, runs in weights.items():
        for seed, path in runs:
            network = load_pretrained(parser.get_parsed_content("network_def", instantiate=True, lazy=False), path)
            network = network.to(torch.device(device))
            embeddings.setdefault(method, []).append((seed, embed_images(network, images, 256, device)))
            logger.info("Task 3: embedded %d images with %s (%s)", len(images), method, path)
    return embeddings


def readout(
    runs: str | None = "mtneuro_benchmark",
    setting: str = "ROI-C3",
    checkpoints: str | Sequence[str] | None = None,
    output: str = "mtneuro_readout",
    baselines: str | Sequence[str] = ("pca", "nmf"),
    bundle: str = BUNDLE,
    task_config: str | None = None,
    cache: str | None = None,
    offline: bool = False,
    device: str = "cpu",
    checkpoint: str = "final",
    quadrant_images: bool = True,
    n_components: int = 256,
    scatter: str | Sequence[str] | None = None,
    **overrides: Any,
) -> list[list[str]]:
    """The Task 3 table: R² of linear readouts of the semantic features from frozen embeddings (see the module
    docstring).

    Args:
        runs: a ``benchmark`` output folder; its runs trained for ``setting`` are read (none: only ``checkpoints``).
        setting: the training setting of the models (the paper: "ROI-C1" for Table 3 I, "ROI-C3" for II).
        checkpoints: extra models as "name=path" (several: comma-separated); runs with the same name are seeds.
        output: folder for the tables and pictures.
        baselines: "pca,nmf" or a subset, or "" for none.
        bundle: the bundle whose ``network_def`` the weights belong to.
        task_config: task config JSON (default the shipped one).
        cache: cutout cache folder.
        offline: read only the cache.
        device: device of the embedding passes.
        checkpoint: "final" or "best" weights of supervised runs (BYOL runs use their linear probe's model).
        quadrant_images: the 128² quadrants of each slice (the reference) or whole slices.
        n_components: PCA/NMF components (at most the number of images).
        scatter: methods to draw (default: every method's first run).
        overrides: bundle config ids for building ``network_def`` (e.g. ``network_def#channels``).

    Returns:
        the rows of ``table3_<setting>.csv``.
    """
    from neurobundles.mtneuro import task3_data
    from neurobundles.mtneuro.readout import (
        baseline_embeddings,
        linear_readout_r2,
        plot_embedding_scatter,
        write_readout_long_csv,
        write_table3_csv,
    )

    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    config = resolve_config(task_config)
    data = task3_data(config, cache, offline, quadrant_images)
    pixels = _downsampled(data.images, config.downsample)  # [M, 1, h, w] in [0, 1]
    normalised = torch.from_numpy((pixels - XRAY_MEAN) / XRAY_STD)
    weights = _trained_runs(runs, setting, checkpoint) if runs else {}
    for entry in _names(checkpoints, ()):
        name, _, path = str(entry).partition("=")
        if not path:
            raise ValueError(f"checkpoints are given as name=path, got {entry!r}.")
        weights.setdefault(name, []).append((str(len(weights.get(name, [])) + 1), Path(path)))
    if not weights and not _names(baselines, ()):
        raise FileNotFoundError(f"no trained runs for {setting} under {runs} and no checkpoints or baselines given.")
    embeddings = _embed_runs(weights, normalised, bundle, device, overrides)
    flat = pixels.reshape(len(pixels), -1)
    for kind in _names(baselines, ()):
        components = min(n_components, *flat.shape)
        embeddings[kind] = [("", baseline_embeddings(kind, flat, components, seed=0))]
    results = {METHOD_TITLES.get(m, m): [linear_readout_r2(e, data.features) for _, e in runs_] for m, runs_ in
               embeddings.items()}  # fmt: skip
    table_path = write_table3_csv(root / f"table3_{setting}.csv", results)
    write_readout_long_csv(root / f"readout_{setting}.csv", results)
    _write_csv(root / "features.csv", ["id", "region", "z", *FEATURES],
               ([i, REGIONS[r], z, *(f"{data.features[f][k]:.6g}" for f in FEATURES)] for k, (i, r, z) in
                enumerate(zip(data.ids, data.regions, data.slices))))  # fmt: skip
    for method in _names(scatter, list(embeddings)):
        if method in embeddings:
            plot_embedding_scatter(root / f"scatter_{method}_{setting}.png", embeddings[method][0][1], data.features,
                                   regions=data.regions, region_names=config.regions)  # fmt: skip
    published = PUBLISHED_TASK3.get(setting, {})
    with open(table_path) as stream:
        rows = list(csv.reader(stream))
    header = [*rows[0], "paper"]
    table = []
    for row in rows[1:]:
        method = next((m for m, title in METHOD_TITLES.items() if title == row[0]), row[0])
        paper = published.get(method)
        table.append([*row, " ".join(f"{v:.2f}" for v in paper) if paper else ""])
    print(f"Task 3 readout R² ({len(data.ids)} images, models trained in {setting}); paper: {', '.join(FEATURES)}")
    print(_format(header, table))
    return table


def timing(
    batch_size: int = 16,
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 3,
    bundle: str = BUNDLE,
    tile_size: int = 128,
    **overrides: Any,
) -> dict[str, float]:
    """Seconds per tile of the bundle's network: a supervised training step, a BYOL step (two half-size views),
    and inference; with the epoch times they give for ROI-C1 (1,076 training tiles) and ROI-C3 (2,516).

    Args:
        batch_size: tiles per step (the recipe trains with 256; the time per tile barely depends on it on a CPU).
        device: torch device.
        threads: CPU threads (default: torch's).
        repeats: timed calls per measurement, after a warm-up.
        bundle: the bundle whose ``network_def`` to time.
        tile_size: network input side (256² tiles downsampled 2×: 128).
        overrides: bundle config ids (e.g. ``network_def#channels``).
    """
    from neurobundles.networks.byol import BYOL
    from neurobundles.tools.timing import median_seconds

    if threads:
        torch.set_num_threads(int(threads))
    target = torch.device(device)
    network = zoo.bundle_parser(bundle, "inference", **overrides).get_parsed_content("network_def").to(target)
    tiles = torch.rand(batch_size, 1, tile_size, tile_size, device=target)
    labels = torch.randint(0, 4, (batch_size,), device=target)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.03)

    def supervised() -> None:
        network.train()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(network(tiles), labels).backward()
        optimizer.step()

    byol = BYOL(network.encoder, network.embedding_dim).to(target)
    byol_optimizer = torch.optim.SGD(byol.trainable_parameters(), lr=0.03)
    half = tile_size // 2
    views = (tiles[..., :half, :half].contiguous(), tiles[..., half:, half:].contiguous())

    def byol_step() -> None:
        byol.train()
        byol_optimizer.zero_grad(set_to_none=True)
        byol(*views).backward()
        byol_optimizer.step()
        byol.update_target(0.99)

    def inference() -> None:
        network.eval()
        with torch.no_grad():
            network(tiles)

    result = {}
    for name, step in (("supervised_step", supervised), ("byol_step", byol_step), ("inference", inference)):
        seconds, _ = median_seconds(step, repeats)
        result[f"{name}_s_per_tile"] = seconds / batch_size
    for setting, count in (("ROI-C1", 1076), ("ROI-C3", 2516)):
        result[f"supervised_epoch_s_{setting}"] = result["supervised_step_s_per_tile"] * count
        result[f"byol_epoch_s_{setting}"] = result["byol_step_s_per_tile"] * count
    print(f"{bundle} on {device} ({torch.get_num_threads()} threads), {tile_size}² tiles, batch {batch_size}:")
    for key, value in result.items():
        print(f"  {key:32s} {value:10.3f}")
    return result


def _quiet(function: Any) -> Any:
    """``function`` for the command line: it prints its own table, so Fire shows no return value."""

    @functools.wraps(function)
    def command(*args: Any, **kwargs: Any) -> None:
        if kwargs.pop("help", None) or kwargs.pop("h", None):  # Fire hands `--help` to functions taking **kwargs
            print(inspect.getdoc(function))
            return
        function(*args, **kwargs)

    return command


class Commands:
    """MTNeuro Task 1 and Task 3: fetch the data, the multi-seed Task 1 benchmark, the Task 3 readout."""

    fetch = staticmethod(_quiet(fetch))
    benchmark = staticmethod(_quiet(benchmark))
    readout = staticmethod(_quiet(readout))
    timing = staticmethod(_quiet(timing))


def main(argv: Sequence[str] | None = None) -> int:
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    fire.Fire(Commands, command=list(argv) if argv is not None else None, name="mtneuro_benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
