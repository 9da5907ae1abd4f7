"""The U-Net baseline: the published size, any sub-volume size, and TorchScript export."""

import pytest
import torch

from neurobundles.networks import BaselineUNet, MeshNet


def test_parameter_count_is_the_baselines_23_35_million():
    assert sum(p.numel() for p in BaselineUNet(out_channels=3).parameters()) == 23_345_283


def test_meshnet_is_over_300_times_smaller():
    unet = sum(p.numel() for p in BaselineUNet(out_channels=32).parameters())
    meshnet = sum(
        p.numel() for p in MeshNet(out_channels=32, channels=21, dilations=(1, 1, 1, 2, 4, 8, 1)).parameters()
    )
    assert unet / meshnet > 300


@pytest.mark.parametrize("shape", [(38, 38, 38), (16, 20, 12), (9, 9, 9)])
def test_output_keeps_the_input_grid_even_for_odd_sizes(shape):
    with torch.no_grad():
        out = BaselineUNet(out_channels=5, features=(4, 8, 16, 32)).eval()(torch.rand(2, 1, *shape))
    assert out.shape == (2, 5, *shape)


def test_three_poolings_with_trilinear_upsampling():
    net = BaselineUNet(features=(4, 8, 16, 32))
    assert sum(isinstance(m, torch.nn.MaxPool3d) for m in net.modules()) == 3
    upsamplers = [m for m in net.modules() if isinstance(m, torch.nn.Upsample)]
    assert [(m.mode, m.align_corners) for m in upsamplers] == [("trilinear", True)] * 3
    assert not any(isinstance(m, torch.nn.ConvTranspose3d) for m in net.modules())


def test_two_conv_bn_relu_per_level():
    blocks = [m for m in BaselineUNet(features=(4, 8, 16, 32)).modules() if type(m).__name__ == "TwoConv"]
    assert len(blocks) == 7  # encoder 4, decoder 3
    for block in blocks:
        for conv in (block.conv_0, block.conv_1):
            kinds = [type(conv.conv).__name__] + [
                type(m).__name__ for m in conv.adn.children() if m.__class__.__name__ != "Dropout"
            ]
            assert kinds == ["Conv3d", "BatchNorm3d", "ReLU"]


def test_scripts_to_torchscript_with_the_same_outputs():
    net = BaselineUNet(out_channels=3, features=(4, 8, 16, 32)).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_wrong_number_of_levels_is_refused():
    with pytest.raises(ValueError, match=r"features needs the widths of 4 levels"):
        BaselineUNet(features=(32, 64, 128, 256, 512))
