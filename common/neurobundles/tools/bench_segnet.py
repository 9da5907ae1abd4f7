"""Speed of the SegNet BraTS bundle: seconds and CPU seconds per case, slices per second, training step, data.

    python -m neurobundles.tools.bench_segnet --threads 2                       # inference and a training step
    python -m neurobundles.tools.bench_segnet --threads 2 --dataset_dir BraTS   # and the data pipeline
    python -m neurobundles.tools.bench_segnet --device cuda:0 --sw_batch_size 64

Inference is the bundle's own ``network_def`` (the seed's SegNet, 81.7 M parameters) and ``inferer`` (MONAI's
``SliceInferer`` over the 155 axial slices of a 3 × 240 × 240 × 155 case), eager and TorchScript; a training step
is the seed's: batch 10 of 240² slices, ``BCEWithLogitsLoss(pos_weight=25)``, SGD with momentum. Every number is
the median of ``repeats`` timed runs after one warm-up (PyTorch's benchmark ``Timer``). With ``dataset_dir``, the
bundle's training preprocessing reads cases of that BraTS folder and serves their slices.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import fire
import torch

from neurobundles import zoo

from .timing import median_seconds

__all__ = ["benchmark", "main"]

BUNDLE = "segnet_brats2020_wholetumor"


def _cpu_seconds(step: Any) -> float:
    """Process CPU seconds (all threads) of one call."""
    start = time.process_time()
    step()
    return time.process_time() - start


def benchmark(
    bundle: str = BUNDLE,
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 3,
    sw_batch_size: int | None = None,
    depth: int = 155,
    dataset_dir: str | None = None,
    cases: int = 2,
    quick: bool = False,
) -> dict[str, Any]:
    """Measure and return the numbers (see the module docstring).

    Args:
        bundle: bundle name or folder.
        device: torch device.
        threads: CPU threads (default: PyTorch's).
        repeats: timed runs per measurement.
        sw_batch_size: slices per forward pass (default: the bundle's).
        depth: slices per case (BraTS: 155).
        dataset_dir: a BraTS folder for the data-pipeline numbers.
        cases: cases to read from ``dataset_dir``.
        quick: a smoke run (narrow network, 8 slices) that checks the tool, not the speed.
    """
    if threads:
        torch.set_num_threads(int(threads))
    target = torch.device(device)
    override: dict[str, Any] = {"network_def#channels": [4, 4, 4, 4, 4]} if quick else {}
    depth = 8 if quick else int(depth)
    if sw_batch_size:
        override["sw_batch_size"] = int(sw_batch_size)
    parser = zoo.bundle_parser(bundle, "inference", **override)
    network = parser.get_parsed_content("network_def").to(target).eval()
    inferer = parser.get_parsed_content("inferer")
    parameters = sum(p.numel() for p in network.parameters())
    volume = torch.rand(1, 3, 240, 240, depth, generator=torch.Generator().manual_seed(0)).to(target)
    results: dict[str, Any] = {
        "bundle": str(bundle),
        "device": str(target),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "parameters": parameters,
        "slices": depth,
        "sw_batch_size": inferer.sw_batch_size,
    }

    with torch.inference_mode():
        seconds, _ = median_seconds(lambda: inferer(volume, network), repeats)
        cpu = _cpu_seconds(lambda: inferer(volume, network)) if target.type == "cpu" else None
    results["inference_s_per_case"] = seconds
    results["inference_cpu_s_per_case"] = cpu
    results["inference_slices_per_s"] = depth / seconds

    scripted = torch.jit.script(network)
    with torch.inference_mode():
        seconds, _ = median_seconds(lambda: inferer(volume, scripted), repeats)
    results["torchscript_s_per_case"] = seconds
    results["torchscript_slices_per_s"] = depth / seconds

    trainer = zoo.bundle_parser(bundle, "train", **override).get_parsed_content("network_def").to(target).train()
    optimiser = torch.optim.SGD(trainer.parameters(), lr=0.01, momentum=0.9)
    loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([25.0], device=target))
    images = torch.rand(10, 3, 240, 240, generator=torch.Generator().manual_seed(1)).to(target)
    masks = (torch.rand(10, 1, 240, 240, generator=torch.Generator().manual_seed(2)) > 0.9).float().to(target)

    def step() -> None:
        optimiser.zero_grad()
        loss(trainer(images), masks).backward()
        optimiser.step()

    seconds, _ = median_seconds(step, 1 if quick else repeats)
    results["train_s_per_iteration"] = seconds
    results["train_slices_per_s"] = 10 / seconds

    if dataset_dir:
        results.update(_data(bundle, dataset_dir, cases))
    return results


def _data(bundle: str, dataset_dir: str, cases: int) -> dict[str, float]:
    """Seconds to read and preprocess a case for training, and slices per second served from the cache."""
    parser = zoo.bundle_parser(bundle, "train", dataset_dir=dataset_dir, num_workers=0)
    items = list(parser.get_parsed_content("datalist"))[: max(1, int(cases))]
    preprocessing = parser.get_parsed_content("train#preprocessing")
    start = time.perf_counter()
    volumes = [preprocessing(item) for item in items]
    load = (time.perf_counter() - start) / len(items)
    from neurobundles.data import SliceDataset

    slices = SliceDataset(volumes, parser.get_parsed_content("train#slices#transform"))
    start = time.perf_counter()
    for index in range(len(slices)):
        slices[index]
    served = len(slices) / (time.perf_counter() - start)
    return {"data_s_per_case": load, "data_slices_per_s": served}


def format_results(results: dict[str, Any]) -> str:
    """The numbers as the lines docs/benchmarks.md quotes."""
    lines = [
        f"{results['bundle']} on {results['device']} ({results['threads']} threads, {results['machine']}), "
        f"{results['parameters']:,} parameters, {results['slices']} slices of 3 × 240², "
        f"{results['sw_batch_size']} per forward pass",
        f"inference: {results['inference_s_per_case']:.1f} s per case"
        + (
            f" ({results['inference_cpu_s_per_case']:.1f} CPU s)"
            if results.get("inference_cpu_s_per_case") is not None
            else ""
        )
        + f", {results['inference_slices_per_s']:.2f} slices/s",
        f"inference, TorchScript: {results['torchscript_s_per_case']:.1f} s per case, "
        f"{results['torchscript_slices_per_s']:.2f} slices/s",
        f"training step (batch 10 of 240², SGD): {results['train_s_per_iteration']:.2f} s per iteration, "
        f"{results['train_slices_per_s']:.1f} slices/s",
    ]
    if "data_s_per_case" in results:
        lines.append(
            f"data: {results['data_s_per_case']:.2f} s to read and preprocess a case, "
            f"{results['data_slices_per_s']:.0f} slices/s served from the cache"
        )
    return "\n".join(lines)


def main(output: str | None = None, **options: Any) -> None:
    """Run :func:`benchmark` and print its lines; ``--output file.json`` also writes the numbers."""
    results = benchmark(**options)
    print(format_results(results))
    if output:
        Path(output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    fire.Fire(main)
