"""Train MeshNet and the U-Net baseline on the same data and compare them side by side.

    neurobundles compare --dataset_dir /data/Mindboggle101_volumes             # small CPU budget
    neurobundles compare --dataset_dir /data/Mindboggle101_volumes --recipe    # the published recipe (GPU)
    python -m neurobundles.tools.compare --dataset_dir /data/subjects --layout freesurfer

Both bundles' own ``train.json`` and ``evaluate.json`` run through MONAI's ``ConfigWorkflow`` with the same
subjects, split, sub-volumes and budget. The table has parameters, checkpoint size, sub-volumes per second at
inference, seconds per full volume, training time, and Dice per class and on average on the test subjects.
Speeds are measured in this one process on this one device, so their ratio compares the networks; absolute
numbers belong to the machine.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire
import torch

from neurobundles import zoo
from neurobundles.atomic import atomic_write_text
from neurobundles.data import freesurfer_datalist, mindboggle_datalist, save_split, split_datalist
from neurobundles.networks import load_pretrained

from .timing import median_seconds

__all__ = ["BUNDLES", "RECIPE", "compare", "format_table", "main"]

BUNDLES = ("meshnet_mindboggle_dkt31", "unet_mindboggle_dkt31")

SMALL = {"volume_size": 128, "voxel_size": 2.0, "crops_per_volume": 16, "max_epochs": 2, "num_samples": 64}
"""Default budget: 2 mm volumes (128³), 16 sub-volumes per brain, 2 epochs: minutes on a CPU."""

RECIPE = {"volume_size": 256, "voxel_size": 1.0, "crops_per_volume": 128, "max_epochs": 30, "num_samples": 512}
"""The published recipe: 1 mm (256³), 128 sub-volumes per brain and epoch, 30 epochs, 512 sub-volumes at inference."""


def subvolumes_per_second(
    network: torch.nn.Module, roi_size: int, batch_size: int, device: torch.device, repeats: int = 3
) -> float:
    """Inference throughput on random ``batch_size × 1 × roi³`` input (autocast on CUDA, as the inferer runs)."""
    network = network.to(device).eval()
    batch = torch.rand(batch_size, 1, roi_size, roi_size, roi_size, device=device)

    def step() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            network(batch)

    return batch_size / median_seconds(step, repeats)[0]


def _datalist(dataset_dir: str | Path, layout: str, label_file: str) -> list[dict]:
    if layout == "mindboggle":
        return mindboggle_datalist(dataset_dir)
    if layout == "freesurfer":
        return freesurfer_datalist(dataset_dir, label=label_file)
    raise ValueError(f"layout must be 'mindboggle' or 'freesurfer', got {layout!r}.")


def _evaluate(bundle: str, checkpoint: Path, test: list[dict], output: Path, common: dict, repeats: int) -> dict:
    """Dice on the test subjects (the bundle's evaluate.json) and seconds to segment one full volume."""
    workflow = zoo.run_workflow(
        bundle, ["inference", "evaluate"], ckpt_path=str(checkpoint), datalist=test, output_dir=str(output), **common
    )
    report = json.loads((output / "dice.json").read_text())
    parser = workflow.parser
    device = parser.get_parsed_content("device")
    volume = parser.get_parsed_content("preprocessing")(dict(test[0]))["image"][None].to(device)
    network = parser.get_parsed_content("network").eval()
    inferer = parser.get_parsed_content("inferer")
    seconds, _ = median_seconds(lambda: inferer(volume, network), repeats)
    return {"dice": report, "volume_seconds": seconds, "device": str(device)}


def compare(
    dataset_dir: str | Path,
    output: str | Path = "compare",
    layout: str = "mindboggle",
    label_file: str = "aparc+aseg.mgz",
    recipe: bool = False,
    device: str | None = None,
    valid: float = 0.1,
    test: float = 0.2,
    split_file: str | None = None,
    seed: int = 0,
    roi_size: int = 38,
    batch_size: int = 16,
    repeats: int = 3,
    bundle_names: Sequence[str] = BUNDLES,
    **budget: Any,
) -> dict[str, Any]:
    """Train each bundle on the same split, evaluate it on the test subjects, time it; returns the results.

    Args:
        dataset_dir: a Mindboggle-101 folder, or a FreeSurfer subjects folder with ``layout="freesurfer"``
            (its ``aparc+aseg`` cortical ids are scored as DKT31: DK-only regions count as background).
        output: folder for checkpoints, logs, ``compare.json`` and ``compare.csv``.
        layout: ``"mindboggle"`` or ``"freesurfer"``.
        label_file: the label map of FreeSurfer subjects (``aparc.DKTatlas+aseg.mgz`` where it exists).
        recipe: train with the published recipe (:data:`RECIPE`) instead of the small budget (:data:`SMALL`).
        device: torch device (default: the bundles' choice, CUDA when available).
        valid, test, split_file, seed: the split (see :func:`neurobundles.data.split_datalist`).
        roi_size: sub-volume edge in voxels (training, inference and the speed test).
        batch_size: sub-volumes per step in training, inference and the speed test.
        repeats: timed repeats of the speed measurements (median).
        bundle_names: the bundles to compare.
        budget: any of ``volume_size``, ``voxel_size``, ``crops_per_volume``, ``max_epochs``, ``num_samples``
            to override the budget, or other top-level config ids of the train configs.
    """
    output = Path(output)
    settings = {**(RECIPE if recipe else SMALL), **budget}
    split = split_datalist(_datalist(dataset_dir, layout, label_file), valid, test, seed, lists=split_file)
    if not split["test"]:
        raise ValueError("the split has no test subject to score; pass test > 0 or a split file with test ids.")
    save_split(split, output / "split.json")
    num_samples = settings.pop("num_samples")
    common: dict[str, Any] = {
        "volume_size": settings.pop("volume_size"),
        "voxel_size": settings.pop("voxel_size"),
        "roi_size": [roi_size] * 3,
    }
    if device is not None:
        common["device"] = f"$torch.device({device!r})"
    results: dict[str, Any] = {"settings": {**common, **settings, "num_samples": num_samples, "batch_size": batch_size}}
    results["settings"]["split"] = {name: [item["id"] for item in items] for name, items in split.items()}
    for bundle in bundle_names:
        folder = output / bundle
        start = time.perf_counter()
        zoo.run_workflow(
            bundle,
            "train",
            workflow_type="train",
            split=split,
            ckpt_dir=str(folder / "models"),
            output_dir=str(folder / "train"),
            batch_size=batch_size,
            val_samples=num_samples,
            **common,
            **settings,
        )
        train_seconds = time.perf_counter() - start
        checkpoint = folder / "models" / "model.pt"
        evaluation = _evaluate(
            bundle, checkpoint, split["test"], folder / "test", {**common, "num_samples": num_samples}, repeats
        )
        network = load_pretrained(zoo.bundle_parser(bundle).get_parsed_content("network_def"), checkpoint)
        speed_device = torch.device(evaluation["device"])
        results[bundle] = {
            "parameters": sum(p.numel() for p in network.parameters()),
            "checkpoint_mb": checkpoint.stat().st_size / 1e6,
            "subvolumes_per_second": subvolumes_per_second(network, roi_size, batch_size, speed_device, repeats),
            "volume_seconds": evaluation["volume_seconds"],
            "train_seconds": train_seconds,
            "mean_dice": evaluation["dice"]["mean"],
            "dice": evaluation["dice"]["per_class"],
            "device": evaluation["device"],
        }
    _write(results, bundle_names, output)
    return results


ROWS = (
    ("parameters", "parameters", "{:,.0f}", -1),
    ("checkpoint (MB)", "checkpoint_mb", "{:.2f}", -1),
    ("sub-volumes/s", "subvolumes_per_second", "{:.1f}", 1),
    ("full volume (s)", "volume_seconds", "{:.1f}", -1),
    ("training (s)", "train_seconds", "{:.0f}", -1),
    ("mean Dice", "mean_dice", "{:.3f}", 0),
)
"""Label, result key, format, and which way is better (-1 smaller, 1 larger, 0 no ratio)."""


def _table(results: dict[str, Any], names: Sequence[str]) -> list[list[str]]:
    """Rows of the side-by-side table; ``advantage`` is how many times better the first bundle is."""
    rows = [["", *names, "advantage"]]
    for label, key, form, better in ROWS:
        values = [results[name][key] for name in names]
        advantage = ""
        if len(values) == 2 and better and min(values) > 0:
            advantage = f"{(values[0] / values[1]) ** better:.3g}×"
        rows.append([label, *(form.format(v) for v in values), advantage])
    for cls in results[names[0]]["dice"]:
        values = [results[name]["dice"].get(cls) for name in names]
        rows.append([f"Dice {cls}", *("" if v is None else f"{v:.3f}" for v in values), ""])
    return rows


def _align(cell: str, width: int, column: int) -> str:
    return cell.ljust(width) if column == 0 else cell.rjust(width)


def format_table(results: dict[str, Any], names: Sequence[str] = BUNDLES) -> str:
    """The comparison as aligned text columns."""
    rows = _table(results, names)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    ]
    settings = results["settings"]
    lines.append(
        f"device {results[names[0]]['device']}; {settings['volume_size']}³ volumes at {settings['voxel_size']} mm, "
        f"{settings['roi_size'][0]}³ sub-volumes, batch {settings['batch_size']}, "
        f"{settings['num_samples']} sub-volumes per volume at inference; test subjects: "
        + ", ".join(settings["split"]["test"])
    )
    return "\n".join(lines)


def _write(results: dict[str, Any], names: Sequence[str], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "compare.json", json.dumps(results, indent=2) + "\n")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(_table(results, names))
    atomic_write_text(output / "compare.csv", buffer.getvalue())


def main(**kwargs: Any) -> None:
    """Command line: ``python -m neurobundles.tools.compare --dataset_dir ... [--recipe] [--output compare]``."""
    results = compare(**kwargs)
    print(format_table(results, tuple(kwargs.get("bundle_names", BUNDLES))))


if __name__ == "__main__":
    fire.Fire(main)
