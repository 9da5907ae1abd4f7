"""Inferers: the chunked head, argmax and brain crop give the same labels as the plain forward pass."""

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from neurobundles.inferers import BrainCropInferer, FullVolumeInferer
from neurobundles.networks import MeshNet
from neurobundles.transforms import ArgMax


@pytest.fixture
def network() -> MeshNet:
    torch.manual_seed(0)
    return MeshNet(out_channels=7, channels=6, dilations=(1, 2, 4, 2, 1)).eval()


@pytest.fixture
def volume() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 1, 40, 36, 32)


def test_chunked_head_argmax_equals_argmax_of_full_logits(network, volume):
    with torch.no_grad():
        expected = network(volume).argmax(dim=1, keepdim=True).float()
        labels = FullVolumeInferer(argmax=True, head_chunk=7, channels_last=False)(volume, network)
    assert torch.equal(labels, expected)


def test_channels_last_changes_nothing_but_layout(network, volume):
    with torch.no_grad():
        plain = FullVolumeInferer(channels_last=False)(volume, network)
        fast = FullVolumeInferer(channels_last=True)(volume, network)
    assert torch.allclose(plain, fast, atol=1e-5)


def test_metatensor_meta_is_kept(network, volume):
    image = MetaTensor(volume, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    with torch.no_grad():
        out = FullVolumeInferer(argmax=True)(image, network)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, image.affine)


def test_argmax_transform_matches_torch_argmax_and_passes_labels_through():
    logits = torch.randn(5, 9, 8, 7)
    assert torch.equal(ArgMax()(logits)[0], logits.argmax(0).float())
    labels = torch.randint(0, 4, (1, 9, 8, 7)).float()
    assert ArgMax()(labels) is labels


class ThresholdMask(nn.Module):
    """Brain = voxels brighter than 0.5: a stand-in brain extractor with a known answer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full_like(x, 0.5), x], dim=1)


def test_brain_crop_equals_the_full_pass_inside_the_brain(network):
    """Exact wherever the network's receptive field (radius 10 here) stays inside the box."""
    volume = torch.zeros(1, 1, 80, 80, 80)
    volume[:, :, 30:50, 28:52, 32:48] = 0.9
    volume += 0.05 * torch.rand(volume.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = FullVolumeInferer(argmax=True)(volume, network)
        cropped = BrainCropInferer(ThresholdMask(), margin=12)(volume, network)
    brain = volume > 0.5
    assert torch.equal(cropped[brain], full[brain])
    assert cropped[:, :, :18].eq(0).all() and cropped[:, :, 62:].eq(0).all()  # outside the box: background


def test_brain_crop_can_clear_labels_outside_the_mask(network):
    volume = torch.zeros(1, 1, 48, 48, 48)
    volume[:, :, 10:30, 10:30, 10:30] = 0.9
    with torch.no_grad():
        masked = BrainCropInferer(ThresholdMask(), margin=4, mask_outside=True)(volume, network)
    assert masked[volume <= 0.5].eq(0).all()


def test_no_brain_found_gives_background(network):
    with torch.no_grad():
        out = BrainCropInferer(ThresholdMask())(torch.zeros(1, 1, 16, 16, 16), network)
    assert out.eq(0).all()


@pytest.mark.parametrize(
    "bundle", ["meshnet_hcp_aparc104", "meshnet_hcp_dkt50", "meshnet_hcp_subcortical", "meshnet_hcp_tissue"]
)
def test_brain_crop_inferer_builds_from_the_bundle_config_without_loading_the_mask_network(bundle):
    """``--brain_crop`` selects this config id; the mask network is loaded on first use, not when it is built."""
    from neurobundles.zoo import bundle_parser

    inferer = bundle_parser(bundle, "inference").get_parsed_content("brain_crop_inferer")
    assert isinstance(inferer, BrainCropInferer)
    assert callable(inferer._mask_network) and not isinstance(inferer._mask_network, nn.Module)
    assert inferer._mask_network.keywords["bundle"].endswith("meshnet_hcp_brainmask")
