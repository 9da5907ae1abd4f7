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
    assert "Winograd kernel fp32" in variants
    for name, values in variants.items():
        assert values["seconds"] > 0
        if "fp32" in name:
            assert values["agreement"] >= 0.999, name


def test_variant_filter_vote_switch_and_per_layer_rates():
    torch.manual_seed(1)
    network = MeshNet(channels=16, dilations=[1, 4], out_channels=5).eval()
    batch = torch.rand(1, 1, 20, 24, 28)
    with torch.no_grad():
        baseline = bench._naive_forward(network)(batch).float()
        variants = bench._variants(network, batch, baseline, repeats=1, vote_samples=0, only=["winograd", "onednn"])
    assert set(variants) == {"Winograd kernel fp32", "channels-last fp32 (oneDNN)"}
    assert all(values["agreement"] >= 0.999 for values in variants.values())
    rates = bench.layer_rates(network, batch)
    assert [(layer["channels"], layer["dilation"]) for layer in rates] == [("1→16", 1), ("16→16", 4)]
    assert all(layer["seconds"] > 0 and layer["direct_equivalent_gflops"] > layer["winograd_gflops"] for layer in rates)
    variants = {name: {**values, "speedup": 1.0} for name, values in variants.items()}
    report = {"layers": rates, "variants": variants, "peak_memory": {"host_rss_gb": 1.0}, "stages_s": {}}
    report |= {key: 1.0 for key in ("baseline_forward_s", "forward_s", "forward_speedup", "end_to_end_s")}
    report |= {"baseline_end_to_end_s": 1.0, "end_to_end_speedup": 1.0, "bundle": "b", "device": "cpu"}
    report |= {"device_name": "cpu", "threads": 2, "torch": torch.__version__, "repeats": 1}
    assert "16→16, dilation 4" in bench.format_report(report)


@pytest.mark.slow
def test_cohort_throughput_segments_every_volume_of_the_folder(t1_crop):
    # the copies must each be segmented: a rate over one volume reported for two would pass unnoticed
    rates = bench.cohort_throughput("meshnet_hcp_tissue", 2, image=str(t1_crop))
    assert set(rates) == set(bench.LOADERS)
    assert all(rate > 0 for rate in rates.values())


def test_command_line_switches_read_false_as_false():
    assert bench._flag("false") is False and bench._flag("False") is False and bench._flag(False) is False
    assert bench._flag("true") is True and bench._flag(True) is True
