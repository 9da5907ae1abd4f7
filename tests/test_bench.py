"""The benchmark's variants run and agree with the naive baseline (timings themselves are never asserted)."""

from __future__ import annotations

import pytest
import torch

from neurobundles.networks import MeshNet
from neurobundles.tools import bench


def test_every_cpu_variant_runs_and_the_exact_ones_agree_with_the_baseline():
    torch.manual_seed(0)
    network = MeshNet(channels=5, dilations=[1, 2, 4], out_channels=3).eval()
    batch = torch.rand(1, 1, 40, 40, 44)
    with torch.no_grad():
        baseline = bench._naive_forward(network)(batch).float()
        variants = bench._variants(network, batch, baseline, repeats=1, vote_samples=4)
    assert "channels-last fp32 (oneDNN)" in variants and "majority vote, 4 × 38³" in variants
    for name, values in variants.items():
        assert values["seconds"] > 0
        if "fp32" in name:
            assert values["agreement"] >= 0.999, name


@pytest.mark.slow
def test_cohort_throughput_segments_every_volume_of_the_folder(t1_crop):
    # the copies must each be segmented: a rate over one volume reported for two would pass unnoticed
    rates = bench.cohort_throughput("meshnet_hcp_tissue", 2, image=str(t1_crop))
    assert set(rates) == set(bench.LOADERS)
    assert all(rate > 0 for rate in rates.values())
