"""The Winograd F(4,3) path for MeshNet's wide layers equals PyTorch's eager fp32 path up to rounding (F(4,3)'s
transforms amplify it to about 2e-5 of the largest value per layer), and labels agree where the model decides."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurobundles.inferers import FullVolumeInferer, winograd
from neurobundles.inferers.full_volume import _labels, _pointwise_head
from neurobundles.networks import BaselineUNet, MeshNet
from neurobundles.zoo import create_workflow, load_network

needs_kernel = pytest.mark.skipif(not winograd.kernel_available(), reason="no C compiler for the Winograd kernel")


def _randomise_norms(network: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so a norm that is skipped or misapplied shows."""
    generator = torch.Generator().manual_seed(3)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
        if isinstance(module, (nn.BatchNorm3d, nn.GroupNorm)) and module.affine:
            module.weight.data.uniform_(0.5, 2.0, generator=generator)
            module.bias.data.uniform_(-0.5, 0.5, generator=generator)
    return network


@needs_kernel
@pytest.mark.parametrize(
    "settings",
    [
        {"channels": 21, "dilations": [1, 2, 4, 8, 16], "act": "relu"},  # ReLU fused; dilation 16 > the depth
        {"channels": 30, "dilations": [1, 3, 2], "act": "elu"},  # 30 → 32 stored channels
        {"channels": 15, "dilations": [16, 8], "act": "gelu", "norm": ("group", {"num_groups": 15, "affine": False})},
        {"channels": 16, "dilations": [1, 2], "act": "relu", "norm": ("group", {"num_groups": 4})},  # 4-channel groups
        {"channels": 12, "dilations": [1, 2], "act": "relu", "norm": "batch", "dropout": 0.0},
    ],
)
def test_winograd_features_equal_eager(settings):
    torch.manual_seed(0)
    network = _randomise_norms(MeshNet(in_channels=2, out_channels=4, **settings)).eval()
    # odd sizes: no axis is a multiple of the 2-voxel tile or of a chunk of tiles, and every dilation reaches borders
    inputs = torch.randn(2, 2, 13, 20, 37)
    with torch.no_grad():
        expected = network.features(inputs)
    features = winograd.winograd_features(network, inputs)
    assert features is not None and features.shape == expected.shape
    assert features.stride(1) == 1  # channels-last, as the head expects
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@needs_kernel
@pytest.mark.parametrize("threads", [1, 3])
def test_threads_split_depth_without_seams(threads):
    torch.manual_seed(1)
    network = MeshNet(channels=16, dilations=[2, 4]).eval()
    inputs = torch.randn(1, 1, 17, 16, 32)
    with torch.no_grad():
        expected = network.features(inputs)
    got = winograd.winograd_features(network, inputs, threads)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@needs_kernel
def test_inferer_labels_and_logits_equal_fp32_on_a_random_network():
    torch.manual_seed(2)
    network = MeshNet(channels=21, dilations=[1, 2, 4], out_channels=104).eval()
    inputs = torch.rand(1, 1, 24, 30, 28)
    with torch.no_grad():
        labels = FullVolumeInferer(argmax=True, precision="winograd")(inputs, network)
        expected = FullVolumeInferer(argmax=True, precision="fp32")(inputs, network)
        logits = FullVolumeInferer(precision="winograd")(inputs, network)
        reference = network(inputs)
    assert labels.shape == expected.shape == (1, 1, 24, 30, 28)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)
    assert (labels == expected).float().mean() >= 0.999


def test_channels_last_head_and_argmax_equal_the_plain_head():
    torch.manual_seed(4)
    conv = nn.Conv3d(21, 50, 1)
    stored = torch.randn(1, 9, 10, 11, 24)  # as the Winograd path leaves it: padded channels last
    features = stored[..., :21].permute(0, 4, 1, 2, 3)
    head = _pointwise_head(conv)
    with torch.no_grad():
        torch.testing.assert_close(head(features), conv(features.contiguous()), rtol=1e-5, atol=1e-5)
        inferer = FullVolumeInferer(argmax=True)
        network = nn.Module()
        network.head = conv
        labels = inferer._chunked_argmax(network, features)
        assert torch.equal(labels, _labels(conv(features.contiguous())))


def test_networks_it_does_not_know_are_left_to_pytorch():
    unet = BaselineUNet(out_channels=2, features=(2, 4, 8, 16)).eval()
    assert not winograd.applies(unet)
    assert winograd.winograd_features(unet, torch.zeros(1, 1, 8, 8, 8)) is None
    prelu = MeshNet(channels=16, dilations=[1], act="prelu").eval()  # per-channel slopes: not elementwise-safe
    assert not winograd.applies(prelu)
    with pytest.raises(RuntimeError, match="cannot run here"):
        FullVolumeInferer(precision="winograd")(torch.zeros(1, 1, 8, 8, 8), prelu)


@pytest.fixture(scope="module")
def t1_block(t1_crop) -> torch.Tensor:
    """A 96³ block of t1_crop through the HCP MeshNets' own preprocessing (conform, intensity normalisation)."""
    parser = create_workflow("meshnet_hcp_aparc104", "inference", datalist=[]).parser
    image = parser.get_parsed_content("preprocessing")({"image": str(t1_crop)})["image"].as_tensor()
    return image[None, :, 80:176, 80:176, 80:176].contiguous()


@needs_kernel
@pytest.mark.slow
@pytest.mark.parametrize(
    "bundle", ["meshnet_hcp_aparc104", "meshnet_hcp_subcortical", "meshnet_hcp_dkt50", "meshnet_hcp_brainmask"]
)
def test_published_wide_models_agree_with_fp32_on_real_mri(t1_block, bundle):
    """The published weights on a 96³ block of a real T1: labels equal to exact fp32 on ≥ 99.9 % of voxels."""
    network = load_network(bundle).eval()
    with torch.no_grad():
        labels = FullVolumeInferer(argmax=True, precision="winograd")(t1_block, network)
        expected = FullVolumeInferer(argmax=True, precision="fp32")(t1_block, network)
    agreement = float((labels == expected).float().mean())
    print(f"{bundle}: Winograd labels equal to fp32 on {agreement:.4%} of a 96³ block")
    assert agreement >= 0.999
    assert len(torch.unique(expected)) > 1  # the block holds anatomy, not only background


@needs_kernel
@pytest.mark.parametrize("classes", [2, 18, 104])
def test_fused_head_and_argmax_equal_head_then_argmax(classes):
    torch.manual_seed(5)
    conv = nn.Conv3d(21, classes, 1)
    stored = torch.randn(2, 7, 9, 11, 24)  # padded channels-last features, batch of 2
    features = stored[..., :21].permute(0, 4, 1, 2, 3)
    labels = winograd.head_argmax(features, conv, threads=3)
    with torch.no_grad():
        expected = _labels(conv(features.contiguous()))
    assert labels.shape == expected.shape == (2, 1, 7, 9, 11)
    assert torch.equal(labels, expected)
    with pytest.raises(ValueError, match="channels-last"):
        winograd.head_argmax(features.contiguous(), conv)
