"""Benchmark the MTNeuro Task 2 bundles: samples per second of inference, training and data loading.

    python -m neurobundles.tools.bench_mtneuro_task2 --device cpu [--cache_dir DIR] [--repeats 3]

For ``mtneuro_task2_unet2d`` (samples: 256 × 256 slices) and ``mtneuro_task2_unet3d`` (256 × 256 × 8 volumes),
each the median of timed runs after a warm-up (:func:`neurobundles.tools.timing.median_seconds`):

- **inference**: the bundle's ``network_def`` (seeded weights: speed does not depend on them) in eval mode on a
  batch of random samples (8 slices; 1 volume), samples per second;
- **cutout**: the bundle's own inferer (slice-wise or 3D Gaussian sliding window, overlap 0.25) on a
  256 × 256 × 48 cutout, seconds and megapixels per second;
- **training**: one step of the released recipe (cross-entropy, SGD, batch 8 slices / 1 volume), samples per second;
- **loading**: ``MTNeuroDataset`` items read from the cache (offline) with the synchronised augmentation, samples
  per second of one process; only with ``--cache_dir`` holding the task (``neurobundles fetch-mtneuro``).

Prints one JSON object per measurement and returns them. Numbers are for the machine they ran on: say how busy it was.
"""

from __future__ import annotations

import json
import platform
from typing import Any

import fire
import torch

from neurobundles.data.mtneuro import MTNeuroDataset, mtneuro_augmentation
from neurobundles.losses import CrossEntropyLoss
from neurobundles.tools.timing import median_seconds
from neurobundles.zoo import bundle_parser

__all__ = ["benchmark", "main"]

BUNDLES = {"mtneuro_task2_unet2d": (8, (1, 256, 256)), "mtneuro_task2_unet3d": (1, (1, 256, 256, 8))}
"""Bundle → (recipe batch, sample shape)."""
CUTOUT_SLICES = 48


def _record(row: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(row), flush=True)
    return row


def _measure(name: str, target: torch.device, repeats: int, cache_dir: str | None, loader_samples: int) -> list[dict]:
    """Every measurement of one bundle."""
    batch, shape = BUNDLES[name]
    parser = bundle_parser(name, "inference", device=f"$torch.device('{target}')")
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").to(target).eval()
    samples = torch.rand(batch, *shape, device=target)
    rows = []
    with torch.no_grad():
        seconds, _ = median_seconds(lambda: network(samples), repeats)
    rows.append({"measure": "inference", "batch": batch, "seconds": round(seconds, 4),
                 "samples_per_s": round(batch / seconds, 2)})  # fmt: skip

    inferer = parser.get_parsed_content("inferer")
    cutout = torch.rand(1, 1, 256, 256, CUTOUT_SLICES, device=target)
    with torch.no_grad():
        seconds, _ = median_seconds(lambda: inferer(cutout, network), max(1, repeats - 1))
    rows.append({"measure": "cutout", "shape_yxz": [256, 256, CUTOUT_SLICES], "seconds": round(seconds, 3),
                 "megapixels_per_s": round(cutout.numel() / seconds / 1e6, 3)})  # fmt: skip

    network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    loss_function = CrossEntropyLoss()
    labels = torch.randint(0, parser.get_parsed_content("num_classes"), (batch, *shape), device=target)

    def step() -> float:
        optimizer.zero_grad()
        loss = loss_function(network(samples), labels)
        loss.backward()
        optimizer.step()
        return float(loss)

    seconds, _ = median_seconds(step, repeats)
    rows.append({"measure": "training", "batch": batch, "seconds": round(seconds, 4),
                 "samples_per_s": round(batch / seconds, 2)})  # fmt: skip

    if cache_dir is not None:
        task = parser.get_parsed_content("task_def")
        dataset = MTNeuroDataset(task, "train", cache_dir, transform=mtneuro_augmentation(), offline=True)
        count = min(loader_samples, len(dataset))

        def load() -> None:
            for index in range(count):
                dataset[index]

        seconds, _ = median_seconds(load, repeats)
        rows.append({"measure": "loading", "task": task.name, "samples": count,
                     "samples_per_s": round(count / seconds, 1)})  # fmt: skip
    return rows


def benchmark(
    cache_dir: str | None = None,
    device: str = "cpu",
    repeats: int = 3,
    bundles: tuple[str, ...] = tuple(BUNDLES),
    loader_samples: int = 64,
) -> list[dict[str, Any]]:
    """Measure every bundle in ``bundles`` (see the module docstring); prints and returns the rows."""
    target = torch.device(device)
    rows = [_record({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "device": str(target)})]  # fmt: skip
    for name in bundles:
        rows += [_record({"bundle": name, **row}) for row in _measure(name, target, repeats, cache_dir, loader_samples)]
    return rows


def main(cache_dir: str | None = None, device: str = "cpu", repeats: int = 3, bundles: str = ",".join(BUNDLES)) -> None:
    """Command line: ``python -m neurobundles.tools.bench_mtneuro_task2`` (see the module docstring)."""
    chosen = bundles if isinstance(bundles, (list, tuple)) else [b for b in str(bundles).split(",") if b]
    benchmark(cache_dir, device, repeats, tuple(chosen))


if __name__ == "__main__":
    fire.Fire(main)
