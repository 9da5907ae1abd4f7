"""Speed of DeepNAT's inference on a real volume: coordinates, dense cascade, per-patch reference, CRF.

    python -m neurobundles.tools.bench_deepnat --threads 2                       # fsaverage, 256³ at 1 mm
    python -m neurobundles.tools.bench_deepnat --threads 2 --downsample 4        # 64³ smoke run (minutes → seconds)
    python -m neurobundles.tools.bench_deepnat --subject SUBJECTS_DIR/bert --output deepnat.json

The subject is a FreeSurfer folder (default: ``fsaverage`` of the data mirror, ``$NEUROBUNDLES_DATA`` or
``../shared/data``): the image is ``mri/orig.mgz`` divided by its 99th percentile inside the brain mask
(``mri/brainmask.mgz`` > 0) and clipped to 0..1.2; ``--downsample F`` block-averages both by ``F`` first
(mask: at least half the block). The steps, each timed once with ``time.perf_counter``:

1. **spectral coordinates**: :func:`~neurobundles.transforms.coordinates.coordinate_maps` of the mask (six
   maps: Cartesian + spectral), with the solver's summary;
2. **dense inference**: :class:`~neurobundles.inferers.deepnat.DeepNATInferer` ``("dense")`` running a
   released-size :class:`~neurobundles.networks.deepnat.DeepNATCascade` (seeded random weights, eval mode) on
   ``torch.cat([image, coords, mask])[None]``: seconds per volume, and per stage the voxels it ran on and its
   seconds (network evaluation + head votes). With random weights stage 1's foreground is arbitrary (18 % of
   fsaverage's brain in one run), so the voxels stage 2 (foreground + a one-voxel rim) runs on are reported, not
   assumed. Then :func:`~neurobundles.networks.deepnat.dense_logits` of stage 2 alone at *every* brain voxel
   (the worst case) gives a per-voxel dense rate;
3. **per-patch reference**: :func:`~neurobundles.networks.deepnat.patch_logits` of stage 2 at a random subset
   of brain voxels (``--patch_voxels``), seconds per voxel, extrapolated to a volume as
   ``per-voxel seconds × (brain voxels for stage 1 + stage-2 voxels)`` (stage 1 differs from stage 2 only in
   its 2- instead of 26-class heads, about 0.1 % of a patch's work), and the label agreement of dense and per-patch
   logits on that subset (argmax of every head, largest softmax difference) as a correctness check;
4. **CRF**: ``DenseCRF().labels(probabilities, image[0], mask)`` on the cascade's 26-class probabilities.
   They are built exactly as ``DeepNATInferer(crf=DenseCRF())`` builds them — ``hierarchy_probabilities`` of
   the two stages' votes, which this tool keeps from the dense run above (a subclass of the inferer records
   each stage's :class:`~neurobundles.inferers.deepnat.HeadVotes`) — so the cascade runs once and the CRF is
   timed on its own, not as the noisy difference of two whole runs. Building the probabilities is timed apart.

No step is repeated and there is no warm-up run of the multi-second steps (each is seconds to minutes, so
one-off allocation and oneDNN primitive creation are a small share); the two network paths get a warm-up on
a handful of voxels. Speed does not depend on the weights, but with random weights the *labels* (and so the
stage-2 region and the CRF's work) are not a trained network's. Numbers are for the machine and its load at the
time: the report gives the CPU, its AVX-512/AMX flags and the load average before and after; other work on the
same cores makes them upper bounds.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire
import nibabel as nib
import numpy as np
import torch

from neurobundles.inferers.deepnat import DeepNATInferer, DenseCRF, HeadVotes, hierarchy_probabilities
from neurobundles.networks.deepnat import DeepNAT, DeepNATCascade, dense_logits, patch_logits
from neurobundles.paths import data_dir
from neurobundles.transforms.coordinates import coordinate_maps

__all__ = ["benchmark", "default_subject", "format_results", "load_subject", "main"]

BUNDLE = "deepnat_miccai2012_anatomy"


def default_subject() -> Path:
    """``freesurfer/fsaverage`` of the data mirror (``NEUROBUNDLES_DATA``, else ``../shared/data``)."""
    root = data_dir()
    subject = root / "freesurfer" / "fsaverage" if root is not None else None
    if subject is None or not (subject / "mri" / "orig.mgz").is_file():
        raise FileNotFoundError(
            "fsaverage not found: set NEUROBUNDLES_DATA to the shared data folder or pass --subject FOLDER"
        )
    return subject


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over blocks of ``factor³`` voxels (the remainder along each axis is cut)."""
    shape = [n // factor for n in volume.shape]
    cut = volume[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor].astype(np.float32)
    return cut.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean((1, 3, 5))


def load_subject(subject: str | Path, downsample: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised T1 (``X×Y×Z`` float32), brain mask (bool) and affine of a FreeSurfer subject folder."""
    mri = Path(subject) / "mri"
    orig = nib.load(str(mri / "orig.mgz"))
    t1 = np.asarray(orig.dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(str(mri / "brainmask.mgz")).dataobj) > 0
    affine = np.asarray(orig.affine, dtype=np.float64)
    factor = max(int(downsample), 1)
    if factor > 1:
        t1 = _block_mean(t1, factor)
        mask = _block_mean(mask, factor) >= 0.5
        affine = affine @ np.diag([factor, factor, factor, 1.0])
    if not mask.any():
        raise ValueError(f"the brain mask of {subject} is empty")
    image = np.clip(t1 / np.percentile(t1[mask], 99), 0.0, 1.2).astype(np.float32)
    return image, mask, affine


def _machine() -> dict[str, Any]:
    """CPU model and whether it has AVX-512 and AMX (from ``/proc/cpuinfo``; Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
    }


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class _RecordingInferer(DeepNATInferer):
    """:class:`DeepNATInferer` that keeps each stage's votes and times it (the inference itself is unchanged)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stages: list[dict[str, Any]] = []

    def _votes(
        self, network: DeepNAT, image: torch.Tensor, coords: torch.Tensor | None, region: torch.Tensor
    ) -> HeadVotes:
        start = time.perf_counter()
        votes = super()._votes(network, image, coords, region)
        seconds = time.perf_counter() - start
        self.stages.append({"classes": network.out_channels, "voxels": len(votes.voxels), "seconds": seconds})
        self.stages[-1]["votes"] = votes
        return votes


def _timed(step: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = step()
    return time.perf_counter() - start, result


def benchmark(
    subject: str | None = None,
    threads: int | None = None,
    patch_voxels: int = 2000,
    downsample: int = 1,
    compute_dtype: str | None = None,
    crf: bool = True,
    seed: int = 0,
    channels: Sequence[int] | None = None,
    fc_channels: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Measure and return the numbers (see the module docstring).

    Args:
        subject: a FreeSurfer subject folder (``mri/orig.mgz``, ``mri/brainmask.mgz``); default fsaverage.
        threads: CPU threads (default: PyTorch's).
        patch_voxels: brain voxels of the per-patch reference.
        downsample: block-average the volume by this integer factor first (a quicker, smaller smoke run).
        compute_dtype: ``None`` (float32) or ``"bfloat16"``/``"float16"``, for the dense evaluation.
        crf: also time the CRF.
        seed: seeds the weights and the per-patch subset.
        channels: the three convolutions' widths (default the released 32, 64, 64; narrow ones for quick runs).
        fc_channels: the two fully connected widths (default the released 1024, 512).
    """
    if threads:
        torch.set_num_threads(int(threads))
    subject_dir = Path(subject) if subject else default_subject()
    results: dict[str, Any] = {
        "bundle": BUNDLE,
        "subject": str(subject_dir),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": _machine(),
        "load_average_before": _load(),
        "downsample": max(int(downsample), 1),
        "compute_dtype": compute_dtype,
    }
    seconds, (image_np, mask_np, affine) = _timed(lambda: load_subject(subject_dir, downsample))
    brain = int(mask_np.sum())
    results.update(shape=list(mask_np.shape), brain_voxels=brain, load_s=seconds)

    # 1. spectral coordinates
    seconds, (coords_np, info) = _timed(lambda: coordinate_maps(mask_np, affine))
    results["coordinates_s"] = seconds
    results["coordinates_info"] = info

    # 2. dense inference of the cascade
    network_options: dict[str, Any] = {}
    if channels is not None:
        network_options["channels"] = tuple(int(c) for c in channels)
    if fc_channels is not None:
        network_options["fc_channels"] = tuple(int(c) for c in fc_channels)
    torch.manual_seed(int(seed))
    network = DeepNATCascade(
        DeepNAT(out_channels=2, **network_options), DeepNAT(out_channels=26, **network_options)
    ).eval()
    results["parameters"] = [sum(p.numel() for p in stage.parameters()) for stage in (network.stage1, network.stage2)]
    image = torch.from_numpy(image_np[None])
    coords = torch.from_numpy(np.ascontiguousarray(coords_np, dtype=np.float32))
    mask = torch.from_numpy(mask_np)
    inputs = torch.cat([image, coords, mask[None].float()])[None]
    centres = torch.nonzero(mask)
    with torch.inference_mode():  # warm-up of both network paths on a few voxels
        few = centres[torch.linspace(0, len(centres) - 1, 8).long()]
        dense_logits(network.stage2, image, coords, few, compute_dtype=compute_dtype)
        patch_logits(network.stage2, image, coords, few)
    inferer = _RecordingInferer("dense", compute_dtype=compute_dtype)
    start = time.perf_counter()
    with torch.inference_mode():
        labels = inferer(inputs, network)
    seconds = time.perf_counter() - start
    del inputs
    stage1, stage2 = inferer.stages
    results["dense_s_per_volume"] = seconds
    results["dense_with_coordinates_s_per_volume"] = seconds + results["coordinates_s"]
    results["dense_voxels_per_s"] = brain / seconds
    results["stage1"] = {"voxels": stage1["voxels"], "seconds": stage1["seconds"]}
    results["stage2"] = {"voxels": stage2["voxels"], "seconds": stage2["seconds"]}
    results["stage2_share_of_brain"] = stage2["voxels"] / brain
    results["foreground_voxels"] = int((labels[0, 0] > 0).sum())

    # 4. CRF on the probabilities the inferer would hand it (before step 3, to free the votes early)
    if crf:
        first, second = stage1.pop("votes"), stage2.pop("votes")
        with torch.inference_mode():
            seconds, probabilities = _timed(
                lambda: hierarchy_probabilities(
                    mask,
                    first.scatter(first.probabilities()),
                    second.scatter(second.probabilities()),
                    second.region,
                )
            )
            del first, second
            results["crf_probabilities_s"] = seconds
            field = DenseCRF()
            seconds, refined = _timed(lambda: field.labels(probabilities, image[0], mask))
        results["crf_s"] = seconds
        results["crf_iterations"] = field.iterations
        results["crf_classes"] = int(probabilities.shape[0])
        results["crf_changed_labels"] = float((refined[mask] != labels[0, 0][mask]).float().mean())
        del probabilities, refined
    inferer.stages.clear()
    del labels

    # 2b. stage 2 at every brain voxel, dense
    with torch.inference_mode():
        seconds, dense = _timed(
            lambda: dense_logits(network.stage2, image, coords, centres, slab=inferer.slab, compute_dtype=compute_dtype)
        )
    results["dense_stage2_all_brain_s"] = seconds
    results["dense_s_per_voxel"] = seconds / brain
    results["dense_stage2_voxels_per_s"] = brain / seconds

    # 3. per-patch reference on a random subset
    count = min(max(int(patch_voxels), 1), brain)
    subset = torch.randperm(brain, generator=torch.Generator().manual_seed(int(seed) + 1))[:count]
    with torch.inference_mode():
        seconds, reference = _timed(lambda: patch_logits(network.stage2, image, coords, centres[subset]))
    per_voxel = seconds / count
    results["patch_voxels"] = count
    results["patch_s"] = seconds
    results["patch_s_per_voxel"] = per_voxel
    results["patch_stage2_all_brain_s"] = per_voxel * brain
    results["patch_s_per_volume"] = per_voxel * (brain + results["stage2"]["voxels"])
    results["ratio_per_voxel"] = per_voxel / results["dense_s_per_voxel"]
    results["ratio_per_volume"] = results["patch_s_per_volume"] / results["dense_s_per_volume"]
    near = dense[subset].float()
    reference = reference.float()
    results["agreement"] = float((near.argmax(1) == reference.argmax(1)).float().mean())
    results["max_probability_difference"] = float((torch.softmax(near, 1) - torch.softmax(reference, 1)).abs().max())
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    results["load_average_after"] = _load()
    return results


def format_results(results: dict[str, Any]) -> str:
    """The numbers as the lines docs/benchmarks.md quotes."""
    machine = results["machine"]
    flags = ", ".join(name for name in ("avx512", "avx512_bf16", "amx") if machine.get(name)) or "no AVX-512"
    shape = "×".join(map(str, results["shape"]))
    info = results["coordinates_info"]
    brain = results["brain_voxels"]
    s1, s2 = results["stage1"], results["stage2"]
    dtype = results["compute_dtype"] or "float32"
    lines = [
        f"{results['bundle']} on {machine['cpu']} ({flags}; {results['threads']} threads, torch {results['torch']}), "
        f"load average {results['load_average_before']} before, {results['load_average_after']} after",
        f"subject {results['subject']}: {shape} (downsample {results['downsample']}), {brain:,} brain voxels, "
        f"parameters {results['parameters'][0]:,} + {results['parameters'][1]:,}",
        f"spectral coordinates: {results['coordinates_s']:.1f} s (coarse factor {info['factor']}, levels "
        + ", ".join(f"{lv['voxels']:,} voxels/{lv['iterations']} it" for lv in info["levels"])
        + f"; solver {info['seconds']:.1f} s)",
        f"dense inference ({dtype}), cascade: {results['dense_s_per_volume']:.1f} s per volume "
        f"({results['dense_with_coordinates_s_per_volume']:.1f} s with the coordinates), "
        f"{results['dense_voxels_per_s']:,.0f} brain voxels/s",
        f"  stage 1 on {s1['voxels']:,} voxels: {s1['seconds']:.1f} s; stage 2 on {s2['voxels']:,} voxels "
        f"({results['stage2_share_of_brain']:.0%} of the brain; random weights): {s2['seconds']:.1f} s",
        f"dense stage 2 at every brain voxel: {results['dense_stage2_all_brain_s']:.1f} s, "
        f"{results['dense_s_per_voxel'] * 1e6:.1f} µs per voxel ({results['dense_stage2_voxels_per_s']:,.0f} voxels/s)",
        f"per patch (stage 2, {results['patch_voxels']:,} voxels): {results['patch_s']:.1f} s, "
        f"{results['patch_s_per_voxel'] * 1e3:.2f} ms per voxel; extrapolated: "
        f"{results['patch_stage2_all_brain_s']:,.0f} s for stage 2 at every brain voxel, "
        f"{results['patch_s_per_volume']:,.0f} s ({results['patch_s_per_volume'] / 3600:.2f} h) per volume "
        f"({brain:,} + {s2['voxels']:,} voxels)",
        f"per patch / dense: {results['ratio_per_volume']:.0f}× per volume, "
        f"{results['ratio_per_voxel']:.0f}× per voxel (stage 2); "
        f"labels equal on {results['agreement']:.4%} of the subset's head predictions, "
        f"largest probability difference {results['max_probability_difference']:.1e}",
    ]
    if "crf_s" in results:
        lines.append(
            f"CRF ({results['crf_classes']} classes, {results['crf_iterations']} mean-field iterations): "
            f"{results['crf_s']:.1f} s on the cascade's probabilities (built as DeepNATInferer(crf=...) builds them "
            f"from the dense run's votes: {results['crf_probabilities_s']:.1f} s); "
            f"changed {results['crf_changed_labels']:.1%} of brain labels"
        )
    lines.append(f"peak resident memory {results['peak_rss_gb']:.1f} GB")
    return "\n".join(lines)


def main(
    subject: str | None = None,
    threads: int | None = None,
    patch_voxels: int = 2000,
    downsample: int = 1,
    compute_dtype: str | None = None,
    crf: bool = True,
    seed: int = 0,
    channels: Sequence[int] | None = None,
    fc_channels: Sequence[int] | None = None,
    output: str | None = None,
) -> None:
    """Run :func:`benchmark` (same options) and print its lines; ``--output file.json`` also writes the numbers."""
    results = benchmark(subject, threads, patch_voxels, downsample, compute_dtype, crf, seed, channels, fc_channels)
    print(format_results(results))
    if output:
        Path(output).write_text(json.dumps(results, indent=2, default=lambda v: np.asarray(v).tolist()) + "\n")


if __name__ == "__main__":
    fire.Fire(main)
