"""Benchmark ``unet3d_iseg2017_tissue``: seconds per subject for both inference modes, training sub-volumes/s.

    python -m neurobundles.tools.bench_iseg --t1 /data/iSeg-2017-Testing/subject-11-T1.img --device cpu

One subject (its T2 is found beside the T1, as the bundle finds it) goes through the bundle's own
preprocessing; then, each as the median of ``repeats`` timed runs after a warm-up:

- **inference**: the overlapping Gaussian sliding window (the default) and MedicalZoo's non-overlapping patch
  reconstruction, wall-clock and CPU seconds per subject, with the share of voxels on which they agree;
- **training**: sub-volumes per second of the sampler alone (``RandForegroundFractionCropd``, one process), of
  the optimisation step alone (forward, Dice loss, backward, SGD at the recipe's batch), and of both in
  sequence (what one data-loading process feeding the device gives; more ``num_workers`` raise the first);
- **size**: parameters and multiply–accumulates per 32³ and per 64³ input (PyTorch's ``FlopCounterMode``).

Speed does not depend on the weights, so the network is the config's ``network_def`` with seeded weights unless
``--ckpt_path`` names trained ones (then the two modes' agreement inside the brain means something); pass
``--network_def @vnet_def`` to time MONAI's VNet instead. Numbers are for the machine they ran on: say how busy it
was, and how many threads (``OMP_NUM_THREADS``) ran.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from neurobundles import zoo
from neurobundles.networks import load_pretrained

from .timing import median_seconds

__all__ = ["benchmark", "format_report", "main", "size"]

BUNDLE = "unet3d_iseg2017_tissue"


def size(network: torch.nn.Module, in_channels: int = 2, edges: tuple[int, ...] = (32, 64)) -> dict[str, float]:
    """Parameters and GMACs (multiply–accumulates, half of PyTorch's counted FLOPs) per cube of each edge."""
    result = {"parameters": float(sum(p.numel() for p in network.parameters()))}
    network = network.eval()
    for edge in edges:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(torch.zeros(1, in_channels, edge, edge, edge))
        result[f"gmacs_{edge}"] = counter.get_total_flops() / 2e9
    return result


def _cpu_and_wall(step: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median wall seconds (PyTorch's ``Timer``), CPU seconds of one more call, and the warm-up's result."""
    wall, result = median_seconds(step, repeats)
    cpu = time.process_time()
    step()
    return wall, time.process_time() - cpu, result


def _iseg_label(t1: Path) -> Path | None:
    """``subject-N-label.img`` beside ``subject-N-T1.img``, if there is one."""
    candidate = t1.with_name(t1.name.replace("-T1.", "-label."))
    return candidate if candidate != t1 and candidate.is_file() else None


def benchmark(
    t1: str,
    label: str | None = None,
    bundle: str = BUNDLE,
    device: str | None = None,
    repeats: int = 3,
    train_steps: int = 3,
    ckpt_path: str | None = None,
    **override: Any,
) -> dict[str, Any]:
    """Time the bundle's inference modes and training pieces on one subject; returns a JSON-able report.

    Args:
        t1: the subject's T1 (its T2 beside it, named with T2 for T1).
        label: its label map, for the sampler (default: the iSeg-named one beside the T1, else the brain mask).
        bundle: bundle name or folder.
        device: torch device (default: the config's, CUDA when available).
        repeats: timed runs per measurement.
        train_steps: optimisation steps per timed training run.
        ckpt_path: trained weights for ``network_def`` (default: seeded random weights).
        override: config values (``network_def``, ``roi_size``, ``overlap``, ``sw_batch_size``, ``batch_size``...).
    """
    settings = dict(override)
    if device:
        settings["device"] = f"$torch.device({device!r})"
    parser = zoo.bundle_parser(bundle, ["train"], **settings)
    target = parser.get_parsed_content("device")
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    if ckpt_path:
        load_pretrained(network, ckpt_path)
    network = network.to(target)
    data: Any = {"image": str(t1), "id": "bench"}
    load_seconds = time.perf_counter()
    for transform in parser.get_parsed_content("image_transforms"):  # as inference.json's preprocessing
        data = transform(data)
    load_seconds = time.perf_counter() - load_seconds
    label = Path(label) if label else _iseg_label(Path(t1))
    if label is not None:
        for transform in parser.get_parsed_content("label_transforms"):
            data = transform({**data, "label": str(label)} if "label" not in data else data)
    batch = data["image"][None].to(target)
    report: dict[str, Any] = {
        "bundle": bundle,
        "t1": str(t1),
        "shape": list(batch.shape[2:]),
        "device": str(target),
        "device_name": torch.cuda.get_device_name(target) if target.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": repeats,
        "network": type(network).__name__,
        "weights": str(ckpt_path) if ckpt_path else "seeded random",
        "size": size(network.cpu()),
        "preprocessing_s": load_seconds,
    }
    network = network.to(target).eval()

    inference: dict[str, dict[str, float]] = {}
    labels = {}
    with torch.no_grad():
        for name in ("sliding_window_inferer", "non_overlapping_inferer"):
            inferer = parser.get_parsed_content(name)
            wall, cpu, logits = _cpu_and_wall(lambda i=inferer: i(batch, network), repeats)
            labels[name] = logits.argmax(dim=1)
            inference[name] = {"seconds": wall, "cpu_seconds": cpu}
    brain = torch.as_tensor(data["mask"]).to(target)[0].bool()[None]  # voxels non-zero in a contrast
    same = labels["sliding_window_inferer"] == labels["non_overlapping_inferer"]
    agreement = float(same[brain].float().mean())
    report["inference"] = inference
    report["mode_agreement"] = agreement
    report["sliding_window"] = {k: parser[k] for k in ("roi_size", "overlap", "sw_batch_size")}

    report["training"] = _training(parser, data, network, target, repeats, train_steps)
    return report


def _training(
    parser: Any, volume: dict, network: torch.nn.Module, target: torch.device, repeats: int, steps: int
) -> dict[str, float]:
    """Sub-volumes/s of the sampler, of the optimisation step, and of both in one process."""
    sampler = parser.get_parsed_content("train#sampler")
    sampler.set_random_state(0)
    label = volume.get("label")
    if label is None:  # a testing subject: crops drawn from its brain mask (the rule only needs a foreground)
        label = volume["mask"]
    subject = {"image": volume["image"], "label": label, "mask": volume["mask"]}  # the keys train.json crops
    draws = 4
    sample_seconds, _ = median_seconds(lambda: [sampler(subject) for _ in range(draws)], repeats)
    per_draw = len(sampler(subject))
    sampler_rate = draws * per_draw / sample_seconds

    batch_size = int(parser["batch_size"])
    crops = sampler(subject)
    while len(crops) < batch_size:
        crops += sampler(subject)
    images = torch.stack([torch.as_tensor(c["image"]) for c in crops[:batch_size]]).to(target)
    labels = torch.stack([torch.as_tensor(c["label"]) for c in crops[:batch_size]]).to(target)
    network.train()
    loss_function = parser.get_parsed_content("loss")
    optimizer = torch.optim.SGD(
        network.parameters(), lr=float(parser["learning_rate"]), momentum=float(parser["momentum"])
    )

    def optimise() -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_function(network(images), labels).backward()
            optimizer.step()

    step_seconds, _ = median_seconds(optimise, repeats)
    step_rate = steps * batch_size / step_seconds
    network.eval()
    return {
        "sampler_subvolumes_per_s": sampler_rate,
        "step_subvolumes_per_s": step_rate,
        "one_process_subvolumes_per_s": 1.0 / (1.0 / sampler_rate + 1.0 / step_rate),
        "batch_size": batch_size,
        "roi_size": list(parser["roi_size"]),
        "crops_per_draw": per_draw,
    }


def format_report(report: dict[str, Any]) -> str:
    size_ = report["size"]
    lines = [
        f"{report['bundle']} ({report['network']}) on {report['device']} ({report['device_name']}, "
        f"{report['threads']} threads, torch {report['torch']}), median of {report['repeats']}",
        f"subject {report['t1']} {tuple(report['shape'])}; preprocessing {report['preprocessing_s']:.2f} s",
        f"size: {size_['parameters'] / 1e6:.3f} M parameters, {size_['gmacs_32']:.3f} GMACs per 32³, "
        f"{size_['gmacs_64']:.2f} GMACs per 64³",
        f"{'inference per subject':<44}{'wall s':>10}{'CPU s':>10}",
    ]
    window = report["sliding_window"]
    names = {
        "sliding_window_inferer": f"sliding window {window['roi_size'][0]}³, overlap {window['overlap']}, Gaussian",
        "non_overlapping_inferer": f"non-overlapping {window['roi_size'][0]}³ patches (MedicalZoo)",
    }
    for name, values in report["inference"].items():
        lines.append(f"  {names[name]:<42}{values['seconds']:>10.2f}{values['cpu_seconds']:>10.2f}")
    lines.append(
        f"  labels equal in both modes: {report['mode_agreement']:.2%} of brain voxels ({report['weights']} weights)"
    )
    training = report["training"]
    rows = {
        f"sampler alone ({training['crops_per_draw']} per draw, one process)": training["sampler_subvolumes_per_s"],
        "optimisation step alone": training["step_subvolumes_per_s"],
        "both in one process": training["one_process_subvolumes_per_s"],
    }
    lines.append(f"training sub-volumes/s ({training['roi_size'][0]}³, batch {training['batch_size']}):")
    lines += [f"  {name:<52}{rate:>10.2f}" for name, rate in rows.items()]
    return "\n".join(lines)


def main(
    t1: str,
    label: str | None = None,
    bundle: str = BUNDLE,
    device: str | None = None,
    repeats: int = 3,
    train_steps: int = 3,
    ckpt_path: str | None = None,
    json_out: str | None = None,
    **override: Any,
) -> None:
    """Print the report (``--json_out FILE`` also saves it); config values as options, e.g. ``--overlap 0.25``."""
    report = benchmark(t1, label, bundle, device, repeats, train_steps, ckpt_path, **override)
    print(format_report(report))
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2, default=lambda v: np.asarray(v).tolist()) + "\n")


if __name__ == "__main__":
    fire.Fire(main)
