import subprocess
import sys

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


def test_classifier_in_slabs_equals_the_convolution_and_keeps_gradients():
    network = MeshNet(in_channels=1, out_channels=7, channels=5, dilations=[1, 2])
    network.head_slab = 16
    x = torch.rand(2, 1, 40, 12, 12)
    features = network.features(x)
    torch.testing.assert_close(network.classify(features), network.head(features), rtol=1e-5, atol=1e-5)
    network(x).sum().backward()
    assert network.head.conv.weight.grad is not None


@pytest.mark.slow
def test_wide_classifier_runs_at_the_declared_256_cube_on_cpu(tmp_path):
    """PyTorch 2.13's default-layout CPU convolution segfaults on a 1×1×1 conv with 50 outputs over 256³ (the
    shape the wide bundles' metadata declares, where the Model Zoo's verify_net_in_out runs); MeshNet must not."""
    script = (
        "import torch; from neurobundles.networks import MeshNet; torch.manual_seed(0)\n"
        "n = MeshNet(in_channels=1, out_channels=50, channels=5, dilations=[1]).eval()\n"
        "with torch.no_grad(): out = n(torch.rand(1, 1, 256, 256, 256))\n"
        "print(tuple(out.shape), bool(torch.isfinite(out[0, :, ::64, ::64, ::64]).all()))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split() == ["(1,", "50,", "256,", "256,", "256)", "True"]
