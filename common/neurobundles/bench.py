"""Benchmark a bundle's inference, stage by stage, against a naive eager fp32 baseline in the same run.

    python -m neurobundles.bench --bundle meshnet_hcp_tissue --device cpu --repeats 3

Every number is the median of ``repeats`` timed runs after one warm-up; ratios compare against the
baseline measured in the same process on the same input, so they are comparable across machines.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fire
import torch
from monai.transforms import Compose

from neurobundles import bundles, hub

__all__ = ["benchmark", "main"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(step: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    result = step()  # warm-up (allocations, oneDNN/cuDNN kernel selection)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _naive_forward(network: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Eager fp32 in PyTorch's default layout, then ``argmax``: what a plain re-implementation does."""
    baseline = copy.deepcopy(network).to(memory_format=torch.contiguous_format).eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return baseline(x.contiguous()).argmax(dim=1, keepdim=True)

    return forward


def benchmark(bundle: str, image: str | None = None, device: str | None = None, repeats: int = 3) -> dict[str, Any]:
    """Time each stage of ``bundle``'s inference config on one image; returns a JSON-able report."""
    image_path = Path(image) if image else hub.fetch_sample("t1_crop")
    with tempfile.TemporaryDirectory() as output_dir:
        override: dict[str, Any] = {"datalist": [{"image": str(image_path), "id": "bench"}], "output_dir": output_dir}
        if device:
            override["device"] = f"$torch.device({device!r})"
        workflow = bundles.create_workflow(bundle, "inference", **override)
        parser = workflow.parser
        target = parser.get_parsed_content("device")
        network = parser.get_parsed_content("network").eval()
        preprocessing: Compose = parser.get_parsed_content("preprocessing")
        postprocessing: Compose = parser.get_parsed_content("postprocessing")
        inferer = parser.get_parsed_content("inferer")

        stages: list[tuple[str, float]] = []
        data: Any = {"image": str(image_path), "id": "bench"}
        for transform in preprocessing.transforms:
            seconds, data = _median_seconds(lambda t=transform, d=data: t(dict(d)), torch.device("cpu"), repeats)
            stages.append((f"pre: {type(transform).__name__}", seconds))
        batch = data["image"][None].to(target)

        with torch.no_grad():
            naive = _naive_forward(network)
            baseline_forward, _ = _median_seconds(lambda: naive(batch.as_tensor()), target, repeats)
            forward, logits = _median_seconds(lambda: inferer(batch, network), target, repeats)
        stages.append(("forward (+ argmax)", forward))
        result: Any = {**data, "pred": logits[0].cpu()}
        for transform in postprocessing.transforms:
            seconds, result = _median_seconds(lambda t=transform, d=result: t(dict(d)), torch.device("cpu"), repeats)
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
    }


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
    ]
    return "\n".join(lines)


def main(
    bundle: str = "meshnet_hcp_tissue",
    image: str | None = None,
    device: str | None = None,
    repeats: int = 3,
    json_out: str | None = None,
) -> None:
    """Print stage timings and speed-ups; ``--json_out FILE`` also saves the raw report."""
    report = benchmark(bundle, image, device, repeats)
    print(format_report(report))
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    fire.Fire(main)
