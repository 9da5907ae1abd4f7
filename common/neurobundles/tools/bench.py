"""Benchmark a bundle's inference, stage by stage, against a naive eager fp32 baseline in the same run.

    python -m neurobundles.tools.bench --bundle meshnet_hcp_tissue --device cpu --repeats 3

Every number is the median of ``repeats`` timed runs after one warm-up; ratios compare against the
baseline measured in the same process on the same input, so they are comparable across machines.
"""

from __future__ import annotations

import copy
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fire
import torch
from monai.transforms import Compose

from neurobundles import zoo

from .timing import median_seconds

__all__ = ["benchmark", "main"]


def _naive_forward(network: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Eager fp32 in PyTorch's default layout, then ``argmax``: what a plain re-implementation does."""
    baseline = copy.deepcopy(network).to(memory_format=torch.contiguous_format).eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not (hasattr(baseline, "features") and hasattr(baseline, "head")):
            return baseline(x.contiguous()).argmax(dim=1, keepdim=True)
        features = baseline.features(x.contiguous())
        # PyTorch 2.13's CPU convolution in this layout segfaults on a 1×1×1 head with 50 or more outputs over a
        # whole 256³ volume (18 run; 50, 64 and 104 crash), so the same head module runs on 32-slice slabs
        slabs = range(0, features.shape[2], 32)
        return torch.cat([baseline.head(features[:, :, i : i + 32]).argmax(dim=1, keepdim=True) for i in slabs], dim=2)

    return forward


VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "compiled kernel fp32": {"compiled": True},
        "Winograd kernel fp32": {"precision": "winograd"},
        "channels-last fp32 (oneDNN)": {"compiled": False, "channels_last": True, "amp": False},
        "channels-last bf16 autocast": {"compiled": False, "channels_last": True, "amp": True, "amp_dtype": "bfloat16"},
    },
    "cuda": {
        "fp32": {"channels_last": False, "amp": False},
        "fp16 autocast": {"channels_last": False, "amp": True, "amp_dtype": "float16"},
        "bf16 autocast": {"channels_last": False, "amp": True, "amp_dtype": "bfloat16"},
        "channels-last fp16 autocast": {"channels_last": True, "amp": True, "amp_dtype": "float16"},
    },
}
"""Forward-pass variants timed against the naive baseline on each device (same input, same run)."""


def _variants(
    network: torch.nn.Module,
    batch: torch.Tensor,
    baseline: torch.Tensor,
    repeats: int,
    vote_samples: int = 512,
    only: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Seconds, speed-up over the naive forward and label agreement with it, for each device variant (those
    whose name contains one of ``only``, if given), and for the sub-volume majority vote (another method, so
    its agreement measures the method, not a bug; ``vote_samples=0`` leaves it out)."""
    from neurobundles.inferers import FullVolumeInferer, MajorityVoteInferer, cpu_kernel, winograd

    results = {}
    for name, settings in VARIANTS[batch.device.type].items():
        if only and not any(part.lower() in name.lower() for part in only):
            continue
        if settings.get("compiled") and not (cpu_kernel.supports(network) and cpu_kernel.kernel_available()):
            continue
        if settings.get("precision") == "winograd" and not (winograd.applies(network) and winograd.kernel_available()):
            continue
        inferer = FullVolumeInferer(argmax=True, **settings)
        seconds, labels = median_seconds(lambda i=inferer: i(batch, network), repeats)
        results[name] = {"seconds": seconds, "agreement": float((labels == baseline).float().mean())}
    if not vote_samples:
        return results
    vote = MajorityVoteInferer(roi_size=38, num_samples=vote_samples)
    seconds, labels = median_seconds(lambda: vote(batch, network), repeats)
    results[f"majority vote, {vote_samples} × 38³"] = {
        "seconds": seconds,
        "agreement": float((labels == baseline).float().mean()),
    }
    return results


def layer_rates(network: torch.nn.Module, batch: torch.Tensor) -> list[dict[str, float]] | None:
    """Seconds and GFLOP/s per MeshNet block on the Winograd path (``None`` where it does not apply): the rate
    that a direct convolution would need for the same time (2·27·in·out per voxel), and the rate of the
    multiply-adds Winograd F(2,3) really does (2·8·in·out per voxel, transforms not counted)."""
    from neurobundles.inferers import winograd
    from neurobundles.inferers.cpu_kernel import conv_and_rest

    timings: list[float] = []
    with torch.no_grad():
        if winograd.winograd_features(network, batch, timings=timings) is None:
            return None
    voxels = batch[0, 0].numel() * batch.shape[0]
    rates = []
    for block, seconds in zip(network.features, timings, strict=True):
        conv = conv_and_rest(block)[0]
        pairs = conv.in_channels * conv.out_channels
        rates.append(
            {
                "channels": f"{conv.in_channels}→{conv.out_channels}",
                "dilation": conv.dilation[0],
                "seconds": seconds,
                "direct_equivalent_gflops": 2 * 27 * pairs * voxels / seconds / 1e9,
                "winograd_gflops": 2 * 8 * pairs * voxels / seconds / 1e9,
            }
        )
    return rates


def _peak_memory_gb(device: torch.device) -> dict[str, float]:
    import resource

    peak = {"host_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        peak["gpu_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return peak


def benchmark(
    bundle: str,
    image: str | None = None,
    device: str | None = None,
    repeats: int = 3,
    variants: Sequence[str] | None = None,
    vote: bool = True,
    layers: bool = False,
) -> dict[str, Any]:
    """Time each stage of ``bundle``'s inference config on one image; returns a JSON-able report.

    ``variants`` keeps only the forward variants whose names contain one of these words; ``vote=False``
    leaves out the majority vote (both for quicker agreement measurements); ``layers=True`` adds the
    per-layer rates of the Winograd path (:func:`layer_rates`)."""
    image_path = Path(image) if image else zoo.fetch_sample("t1_crop")
    with tempfile.TemporaryDirectory() as output_dir:
        override: dict[str, Any] = {"datalist": [{"image": str(image_path), "id": "bench"}], "output_dir": output_dir}
        if device:
            override["device"] = f"$torch.device({device!r})"
        workflow = zoo.create_workflow(bundle, "inference", **override)
        workflow.initialize()  # fetches and loads the weights
        parser = workflow.parser
        target = parser.get_parsed_content("device")
        network = parser.get_parsed_content("network").eval()
        preprocessing: Compose = parser.get_parsed_content("preprocessing")
        postprocessing: Compose = parser.get_parsed_content("postprocessing")
        inferer = parser.get_parsed_content("inferer")

        stages: list[tuple[str, float]] = []
        data: Any = {"image": str(image_path), "id": "bench"}
        for transform in preprocessing.transforms:
            seconds, data = median_seconds(lambda t=transform, d=data: t(dict(d)), repeats)
            stages.append((f"pre: {type(transform).__name__}", seconds))
        batch = data["image"][None].to(target)

        with torch.no_grad():
            naive = _naive_forward(network)
            # eager PyTorch has no kernel to compile or select: with one repeat, its one call is the measurement
            baseline_forward, baseline_labels = median_seconds(lambda: naive(batch.as_tensor()), repeats, repeats > 1)
            labels = baseline_labels.float()
            timed = _variants(network, batch.as_tensor(), labels, repeats, 512 if vote else 0, variants)
            for values in timed.values():
                values["speedup"] = baseline_forward / values["seconds"]
            if target.type == "cuda":
                torch.cuda.reset_peak_memory_stats(target)
            forward, logits = median_seconds(lambda: inferer(batch, network), repeats)
            rates = layer_rates(network, batch.as_tensor()) if layers and target.type == "cpu" else None
        stages.append(("forward (+ argmax)", forward))
        result: Any = {**data, "pred": logits[0].cpu()}
        for transform in postprocessing.transforms:
            seconds, result = median_seconds(lambda t=transform, d=result: t(dict(d)), repeats)
            stages.append((f"post: {type(transform).__name__}", seconds))

    end_to_end = sum(seconds for _, seconds in stages)
    baseline_end_to_end = end_to_end - forward + baseline_forward
    return {
        "bundle": bundle,
        "image": str(image_path),
        "device": str(target),
        "device_name": torch.cuda.get_device_name(target) if target.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": repeats,
        "stages_s": dict(stages),
        "forward_s": forward,
        "baseline_forward_s": baseline_forward,
        "forward_speedup": baseline_forward / forward,
        "end_to_end_s": end_to_end,
        "baseline_end_to_end_s": baseline_end_to_end,
        "end_to_end_speedup": baseline_end_to_end / end_to_end,
        "variants": timed,
        "peak_memory": _peak_memory_gb(target),
        **({"layers": rates} if rates else {}),
    }


LOADERS = {
    "DataLoader (load, then compute)": {"_target_": "DataLoader", "num_workers": 0},
    "PrefetchDataLoader (load next while computing)": {
        "_target_": "neurobundles.data.PrefetchDataLoader",
        "prefetch": 1,
    },
}
"""Cohort loaders compared by :func:`cohort_throughput`."""


def cohort_throughput(
    bundle: str, volumes: int, image: str | None = None, device: str | None = None, nproc: int = 1
) -> dict[str, float]:
    """Volumes per second for a folder of ``volumes`` copies of one image, per data loader, and with ``nproc``
    processes sharing the cohort (``multi_gpu_inference.json``, as ``neurobundles segment --nproc``).

    The copies are real files: the datalist rightly segments a file once however many links point to it.
    """
    source = Path(image) if image else zoo.fetch_sample("t1_crop")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "inputs"
        inputs.mkdir()
        for index in range(volumes):
            shutil.copyfile(source, inputs / f"subject{index:03d}{''.join(source.suffixes)}")
        for name, loader in LOADERS.items():
            output_dir = Path(folder) / "out" / str(len(results))
            override: dict[str, Any] = {"dataset_dir": str(inputs), "output_dir": str(output_dir)}
            override["dataloader"] = {**loader, "dataset": "@dataset", "batch_size": 1, "shuffle": False}
            if device:
                override["device"] = f"$torch.device({device!r})"
            start = time.perf_counter()
            zoo.run_workflow(bundle, "inference", **override)
            seconds = time.perf_counter() - start
            _check_all_segmented(output_dir, volumes, name)
            results[name] = volumes / seconds
        if nproc > 1:
            output_dir = Path(folder) / "out" / "processes"
            override = {"dataset_dir": str(inputs), "output_dir": str(output_dir)}
            if device:
                override["device"] = f"$torch.device({device!r})"
            start = time.perf_counter()
            zoo.run_workflow_processes(bundle, ["inference", "multi_gpu_inference"], nproc, **override)
            seconds = time.perf_counter() - start
            name = f"{nproc} processes, PrefetchDataLoader each"
            _check_all_segmented(output_dir, volumes, name)
            results[name] = volumes / seconds
    return results


def _check_all_segmented(output_dir: Path, volumes: int, name: str) -> None:
    written = len(list(output_dir.glob("*_summary.json")))  # one per segmented volume
    if written != volumes:
        raise RuntimeError(f"{name}: {written} volumes segmented of {volumes}; the rate would be wrong.")


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"bundle {report['bundle']} on {report['device']} ({report['device_name']}, {report['threads']} threads, "
        f"torch {report['torch']}), median of {report['repeats']}",
        f"{'stage':<46}{'seconds':>10}",
    ]
    lines += [f"  {name:<44}{seconds:>10.3f}" for name, seconds in report["stages_s"].items()]
    lines += [
        "",
        f"{'per 256³ volume':<26}{'baseline (eager fp32)':>22}{'bundle':>10}{'speed-up':>10}",
        f"{'  forward (+ argmax)':<26}{report['baseline_forward_s']:>22.3f}{report['forward_s']:>10.3f}"
        f"{report['forward_speedup']:>9.2f}×",
        f"{'  end to end':<26}{report['baseline_end_to_end_s']:>22.3f}{report['end_to_end_s']:>10.3f}"
        f"{report['end_to_end_speedup']:>9.2f}×",
        "",
        f"{'forward variants':<32}{'seconds':>10}{'speed-up':>10}{'labels = naive':>16}",
    ]
    for name, values in report["variants"].items():
        lines.append(f"  {name:<30}{values['seconds']:>10.3f}{values['speedup']:>9.2f}×{values['agreement']:>15.4%}")
    lines.append("peak memory: " + ", ".join(f"{k} {v:.2f}" for k, v in report["peak_memory"].items()))
    if "layers" in report:
        header = f"{'Winograd path per layer':<32}{'seconds':>10}{'direct-equiv. GFLOP/s':>24}{'Winograd GFLOP/s':>18}"
        lines.append(header)
        for layer in report["layers"]:
            name = f"{layer['channels']}, dilation {layer['dilation']}"
            lines.append(
                f"  {name:<30}{layer['seconds']:>10.3f}{layer['direct_equivalent_gflops']:>24.0f}"
                f"{layer['winograd_gflops']:>18.0f}"
            )
    if "cohort_volumes_per_s" in report:
        lines.append(f"cohort of {report['cohort_volumes']} volumes:")
        lines += [f"  {name:<46}{rate:>8.3f} volumes/s" for name, rate in report["cohort_volumes_per_s"].items()]
    return "\n".join(lines)


def _flag(value: bool | str) -> bool:
    """A command-line switch: Fire passes ``--vote false`` as the string ``"false"``, which is truthy."""
    return value.strip().lower() not in {"false", "0", "no", "off"} if isinstance(value, str) else bool(value)


def main(
    bundle: str = "meshnet_hcp_tissue",
    image: str | None = None,
    device: str | None = None,
    repeats: int = 3,
    json_out: str | None = None,
    cohort: int = 0,
    nproc: int = 1,
    variants: str | Sequence[str] | None = None,
    vote: bool = True,
    layers: bool = False,
) -> None:
    """Print stage timings and speed-ups; ``--cohort N`` adds volumes/s over N volumes per data loader (and with
    ``--nproc P`` processes); ``--json_out FILE`` also saves the raw report; ``--variants winograd,onednn``
    times only the forward variants named so; ``--vote false`` leaves out the majority vote; ``--layers true``
    adds seconds and GFLOP/s per layer of the Winograd path."""
    names = variants.split(",") if isinstance(variants, str) else variants
    report = benchmark(bundle, image, device, repeats, names, _flag(vote), _flag(layers))
    if cohort:
        report["cohort_volumes"] = cohort
        report["cohort_volumes_per_s"] = cohort_throughput(bundle, cohort, image, device, nproc)
    print(format_report(report))
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    fire.Fire(main)
