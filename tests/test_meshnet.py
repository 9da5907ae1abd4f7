import pytest
import torch

from neurobundles.networks import MeshNet, receptive_field


def test_output_keeps_the_input_grid():
    net = MeshNet(in_channels=1, out_channels=4, channels=6, dilations=(1, 2, 4, 2, 1)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 17, 19, 23))
    assert out.shape == (2, 4, 17, 19, 23)


def test_parameter_count_matches_the_published_tissue_model():
    net = MeshNet(out_channels=3, channels=5, dilations=(1, 2, 4, 8, 16, 8, 4, 2, 1))
    assert sum(p.numel() for p in net.parameters()) == 5598


def test_seed_architectures_have_the_papers_sizes():
    small = MeshNet(out_channels=3, channels=21, dilations=(1, 1, 1, 2, 4, 8, 1))
    large = MeshNet(out_channels=3, channels=71, dilations=(1, 1, 2, 4, 8, 16, 1))
    assert sum(p.numel() for p in small.parameters()) < 75_000
    assert sum(p.numel() for p in large.parameters()) > 5 * sum(p.numel() for p in small.parameters())


def test_receptive_field_grows_with_dilation():
    assert receptive_field((1, 2, 4, 8, 16, 8, 4, 2, 1)) == 1 + 2 * 46


def test_norm_and_dropout_are_built_in_order():
    net = MeshNet(
        channels=4, dilations=(1, 2), act="gelu", norm=("group", {"num_groups": 4, "affine": False}), dropout=0.1
    )
    block = net.features[0]
    kinds = [type(m).__name__ for m in block.adn.children()]
    assert kinds == ["GroupNorm", "GELU", "Dropout"]


def test_mismatched_channels_and_dilations_are_refused():
    with pytest.raises(ValueError, match="channels has 2 entries but dilations has 3"):
        MeshNet(channels=[4, 4], dilations=(1, 2, 4))


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        MeshNet(kernel_size=2)
