"""The compiled CPU kernel for MeshNet's dilated layers equals PyTorch's eager path."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from neurobundles.inferers import FullVolumeInferer, cpu_kernel
from neurobundles.networks import BaselineUNet, MeshNet
from neurobundles.zoo import load_network

needs_kernel = pytest.mark.skipif(not cpu_kernel.kernel_available(), reason="no C compiler for the CPU kernel")


@needs_kernel
@pytest.mark.parametrize(
    "settings",
    [
        {"channels": 7, "dilations": [1, 2, 5], "act": "relu"},  # 7 output channels: one register block
        {"channels": 30, "dilations": [1, 4, 2], "act": "elu"},  # 30 = two blocks of 15; ELU runs in torch
        {"channels": 15, "dilations": [3, 1], "act": "gelu", "norm": ("group", {"num_groups": 15, "affine": False})},
    ],
)
def test_compiled_features_equal_eager(settings):
    torch.manual_seed(0)
    network = MeshNet(in_channels=2, out_channels=4, **settings).eval()
    # odd sizes: x (37) is not a multiple of the 16-lane vector, and dilation 5 reaches past every border
    inputs = torch.randn(2, 2, 11, 20, 37)
    with torch.no_grad():
        expected = network.features(inputs)
    compiled = cpu_kernel.compiled_features(network, inputs)
    assert compiled is not None and compiled.shape == expected.shape
    torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-4)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 3])
def test_threads_split_depth_without_seams(threads):
    torch.manual_seed(1)
    network = MeshNet(channels=5, dilations=[2, 4]).eval()
    inputs = torch.randn(1, 1, 9, 16, 32)
    with torch.no_grad():
        expected = network.features(inputs)
    torch.testing.assert_close(cpu_kernel.compiled_features(network, inputs, threads), expected, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_pretrained_tissue_model_labels_agree_on_real_mri(t1_crop):
    """The published weights on a 96³ block of a real T1: logits within float32 noise, labels ≥ 99.9 %."""
    network = load_network("meshnet_hcp_tissue").eval()
    image = np.asarray(nib.load(str(t1_crop)).dataobj, dtype=np.float32)[80:176, 80:176, 80:176]
    inputs = torch.from_numpy(image / image.max())[None, None]
    eager = FullVolumeInferer(compiled=False, channels_last=False)
    with torch.no_grad():
        logits = FullVolumeInferer(compiled=True)(inputs, network)
        torch.testing.assert_close(logits, eager(inputs, network), rtol=1e-3, atol=1e-3)
        labels = FullVolumeInferer(compiled=True, argmax=True)(inputs, network)
        expected = FullVolumeInferer(compiled=False, channels_last=False, argmax=True)(inputs, network)
    assert (labels == expected).float().mean() >= 0.999
    assert len(torch.unique(labels)) == 3  # all three classes occur in the block: the test can fail


def test_insisting_on_the_kernel_for_a_network_it_cannot_run_is_an_error():
    network = BaselineUNet(out_channels=2, features=(2, 4, 8, 16)).eval()
    with pytest.raises(RuntimeError, match="MeshNet-like network"):
        FullVolumeInferer(compiled=True)(torch.zeros(1, 1, 8, 8, 8), network)
    assert not cpu_kernel.supports(network)


def test_without_a_compiler_the_inferer_falls_back_to_torch(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("NEUROBUNDLES_HOME", str(tmp_path))  # no cached library to find
    cpu_kernel._kernel.cache_clear()
    try:
        torch.manual_seed(2)
        network = MeshNet(channels=3, dilations=[1, 2]).eval()
        inputs = torch.randn(1, 1, 8, 8, 8)
        assert cpu_kernel.compiled_features(network, inputs) is None
        assert "could not compile" in caplog.text
        with torch.no_grad():
            expected = network(inputs)
        torch.testing.assert_close(FullVolumeInferer()(inputs, network), expected)
    finally:
        cpu_kernel._kernel.cache_clear()


@needs_kernel
def test_training_keeps_the_autograd_path():
    network = MeshNet(channels=3, dilations=[1, 2]).train()
    inputs = torch.randn(1, 1, 8, 8, 8)
    logits = FullVolumeInferer()(inputs, network)
    assert logits.requires_grad  # gradients flow: the kernel (no autograd) was not used
    with pytest.raises(RuntimeError, match="inference"):
        FullVolumeInferer(compiled=True)(inputs, network)


@needs_kernel
def test_automatic_choice_takes_the_kernel_for_narrow_networks_only(monkeypatch):
    calls = []
    original = cpu_kernel.compiled_features
    monkeypatch.setattr(cpu_kernel, "compiled_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    inputs = torch.randn(1, 1, 8, 8, 8)
    for channels, expected_calls in [(5, 1), (cpu_kernel.NARROW + 1, 1)]:  # the wide one must not add a call
        network = MeshNet(channels=channels, dilations=[1, 2]).eval()
        assert cpu_kernel.pays(network) == (channels <= cpu_kernel.NARROW)
        with torch.no_grad():
            torch.testing.assert_close(FullVolumeInferer()(inputs, network), network(inputs), rtol=1e-4, atol=1e-4)
        assert len(calls) == expected_calls
