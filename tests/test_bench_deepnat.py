"""The DeepNAT benchmark runs end to end on fsaverage at 4 mm with a narrow network (timings are never compared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neurobundles.tools import bench_deepnat

QUICK = {"downsample": 4, "patch_voxels": 200, "channels": (4, 8, 8), "fc_channels": (32, 16), "threads": 1}
"""64³, the released topology with narrow layers, one thread: about 10 s even with the 2 cores shared."""


@pytest.fixture(scope="module")
def results(fsaverage: Path) -> dict:
    threads = torch.get_num_threads()
    try:
        return bench_deepnat.benchmark(subject=str(fsaverage), **QUICK)
    finally:
        torch.set_num_threads(threads)  # --threads sets the process's count; leave other tests theirs


def test_every_step_is_timed(results: dict) -> None:
    assert results["shape"] == [64, 64, 64]
    assert 0 < results["brain_voxels"] < 64**3
    for key in (
        "coordinates_s",
        "dense_s_per_volume",
        "dense_stage2_all_brain_s",
        "dense_s_per_voxel",
        "patch_s",
        "patch_s_per_voxel",
        "patch_s_per_volume",
        "ratio_per_volume",
        "ratio_per_voxel",
        "crf_probabilities_s",
        "crf_s",
    ):
        assert results[key] > 0, key
    assert results["stage1"]["voxels"] == results["brain_voxels"]
    assert 0 < results["stage2"]["voxels"] <= results["brain_voxels"]
    assert results["stage1"]["seconds"] > 0 and results["stage2"]["seconds"] > 0
    assert {"factor", "levels", "eigenvalues", "seconds"} <= set(results["coordinates_info"])
    assert results["crf_classes"] == 26
    assert results["patch_voxels"] == QUICK["patch_voxels"]


def test_dense_agrees_with_per_patch(results: dict) -> None:
    assert results["agreement"] >= 0.999
    assert results["max_probability_difference"] < 1e-4


def test_per_patch_extrapolation_follows_the_formula(results: dict) -> None:
    per_voxel = results["patch_s"] / results["patch_voxels"]
    assert results["patch_s_per_voxel"] == pytest.approx(per_voxel)
    voxels = results["brain_voxels"] + results["stage2"]["voxels"]
    assert results["patch_s_per_volume"] == pytest.approx(per_voxel * voxels)
    assert results["patch_stage2_all_brain_s"] == pytest.approx(per_voxel * results["brain_voxels"])
    assert results["ratio_per_volume"] == pytest.approx(results["patch_s_per_volume"] / results["dense_s_per_volume"])
    dense_per_voxel = results["dense_stage2_all_brain_s"] / results["brain_voxels"]
    assert results["ratio_per_voxel"] == pytest.approx(per_voxel / dense_per_voxel)


def test_report_prints_and_serialises(results: dict, tmp_path: Path) -> None:
    text = bench_deepnat.format_results(results)
    assert "spectral coordinates" in text and "per patch / dense" in text and "CRF" in text
    path = tmp_path / "deepnat.json"
    path.write_text(json.dumps(results))
    assert json.loads(path.read_text())["brain_voxels"] == results["brain_voxels"]
