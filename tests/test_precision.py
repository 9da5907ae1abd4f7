"""The CPU path is chosen from what was measured for the bundle and what this machine can run."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from neurobundles.inferers import FullVolumeInferer, precision, winograd
from neurobundles.inferers.precision import AGREEMENT_FLOOR, choose_path
from neurobundles.networks import MeshNet
from neurobundles.zoo import bundle_names, bundle_path, create_workflow

WIDE = MeshNet(channels=16, dilations=[1, 2]).eval()
MEASURED = {
    "winograd": {"agreement": 0.9998, "speedup": {"avx2": 2.0, "avx512": 2.0}},
    "bf16": {"agreement": 0.9995, "speedup": {"avx512": 1.5}},
}
needs_kernel = pytest.mark.skipif(not winograd.kernel_available(), reason="no C compiler for the Winograd kernel")


@pytest.fixture
def no_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})


@pytest.fixture
def with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})


@needs_kernel
def test_auto_takes_the_fastest_measured_path_this_cpu_runs(no_bf16):
    assert choose_path("auto", MEASURED, WIDE)[0] == "winograd"
    faster_bf16 = {**MEASURED, "bf16": {"agreement": 0.9995, "speedup": {"avx2": 3.0, "avx512": 3.0}}}
    assert choose_path("auto", faster_bf16, WIDE)[0] == "winograd"  # no native bf16 here: never emulated


@needs_kernel
def test_a_speedup_measured_on_another_cpu_class_does_not_count(no_bf16):
    assert precision.cpu_class() == "avx2"
    only_avx512 = {"winograd": {"agreement": 0.9999, "speedup": {"avx512": 2.5}}}
    path, reason = choose_path("auto", only_avx512, WIDE)
    assert path == "fp32" and "avx2" in reason


@needs_kernel
def test_native_bf16_is_taken_only_where_the_cpu_has_it_and_it_measured_faster(with_bf16):
    faster_bf16 = {**MEASURED, "bf16": {"agreement": 0.9995, "speedup": {"avx512": 3.0}}}
    path, reason = choose_path("auto", faster_bf16, WIDE)
    assert path == "bf16" and "99.9500%" in reason and "3.00×" in reason and "avx512" in reason
    slower_bf16 = {"bf16": {"agreement": 0.9999, "speedup": {"avx512": 0.7}}}  # as measured on AMX: slower than fp32
    assert choose_path("auto", slower_bf16, WIDE)[0] == "fp32"


def test_unmeasured_or_disagreeing_paths_are_never_chosen(with_bf16):
    assert choose_path("auto", None, WIDE)[0] == "fp32"
    assert choose_path("auto", {}, WIDE)[0] == "fp32"
    fast = {"avx2": 4.0, "avx512": 4.0}
    below = {path: {"agreement": AGREEMENT_FLOOR - 1e-4, "speedup": fast} for path in ("winograd", "bf16")}
    assert choose_path("auto", below, WIDE)[0] == "fp32"
    incomplete = {
        "winograd": {"speedup": fast},
        "bf16": {"agreement": 0.9999},
        "int8": {"agreement": 1.0, "speedup": fast},
    }
    assert choose_path("auto", incomplete, WIDE)[0] == "fp32"


def test_auto_falls_back_to_fp32_without_a_compiler_or_for_other_networks(monkeypatch, tmp_path, no_bf16):
    unet_like = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1))
    assert choose_path("auto", MEASURED, unet_like)[0] == "fp32"
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("NEUROBUNDLES_HOME", str(tmp_path))  # no cached library to find
    winograd._kernel.cache_clear()
    try:
        assert choose_path("auto", MEASURED, WIDE)[0] == "fp32"
        with pytest.raises(RuntimeError, match="cannot run here"):
            choose_path("winograd", MEASURED, WIDE)
    finally:
        winograd._kernel.cache_clear()


def test_forcing_a_path_this_cpu_lacks_is_an_error(no_bf16):
    with pytest.raises(RuntimeError, match="AVX512-BF16 or AMX"):
        choose_path("bf16", MEASURED, WIDE)
    with pytest.raises(ValueError, match="precision must be"):
        FullVolumeInferer(precision="fp16")
    assert choose_path("fp32", MEASURED, WIDE)[0] == "fp32"


@needs_kernel
def test_the_choice_is_printed_once_and_fp32_forces_exactness(caplog, no_bf16):
    torch.manual_seed(0)
    inputs = torch.rand(1, 1, 10, 12, 14)
    inferer = FullVolumeInferer(argmax=True, measured_paths=MEASURED)
    with caplog.at_level(logging.INFO, logger="neurobundles.inferers.full_volume"), torch.no_grad():
        inferer(inputs, WIDE)
        inferer(inputs, WIDE)
        exact = FullVolumeInferer(argmax=True, precision="fp32", measured_paths=MEASURED)(inputs, WIDE)
    lines = [r.getMessage() for r in caplog.records if "CPU inference path" in r.getMessage()]
    assert len(lines) == 2 and "Winograd" in lines[0] and "99.9800%" in lines[0] and "exact fp32" in lines[1]
    with torch.no_grad():
        assert torch.equal(exact, FullVolumeInferer(argmax=True, compiled=False)(inputs, WIDE))


def test_explicit_device_settings_bypass_the_policy(no_bf16):
    inferer = FullVolumeInferer(compiled=False, measured_paths=MEASURED)
    assert inferer._cpu_path(torch.zeros(1, 1, 4, 4, 4), WIDE) is None


def test_bundle_configs_carry_measured_paths_with_their_numbers():
    """Every bundle that runs FullVolumeInferer with a precision policy says what was measured for it."""
    checked = 0
    for name in bundle_names():
        config = json.loads((bundle_path(name) / "configs" / "inference.json").read_text())
        if "measured_paths" not in config:
            continue
        checked += 1
        assert config["precision"] == "auto" and config["inferer"]["measured_paths"] == "@measured_paths"
        for path, numbers in config["measured_paths"].items():
            assert path in precision.PATHS and path != "fp32", (name, path)
            assert 0 < numbers["agreement"] <= 1 and numbers["speedup"], (name, path)
            assert all(kind in {"avx2", "avx512"} and ratio > 0 for kind, ratio in numbers["speedup"].items())
            assert numbers["images"] and numbers["cpu"], (name, path)  # where it was measured
    assert checked >= 5


def test_precision_override_reaches_the_bundle_inferer():
    parser = create_workflow("meshnet_hcp_aparc104", "inference", precision="fp32").parser
    inferer = parser.get_parsed_content("inferer")
    assert inferer.precision == "fp32" and "winograd" in inferer.measured_paths
    crop = parser.get_parsed_content("brain_crop_inferer")
    assert crop.inferer.precision == "fp32" and crop.mask_inferer.precision == "fp32"
    brainmask = json.loads((bundle_path("meshnet_hcp_brainmask") / "configs" / "inference.json").read_text())
    assert crop.mask_inferer.measured_paths == brainmask["measured_paths"]
