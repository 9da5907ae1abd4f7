"""segmentation-models-pytorch architectures in the MTNeuro 2D bundle (MTNeuro's Task 2 baselines besides the U-Net).

smp needs torchvision, which the main environment leaves out, so these run in MONAI Label's environment
(``bash .ci/run-monailabel``, marker ``torchvision``); elsewhere the module is skipped.
"""

from __future__ import annotations

import pytest
import torch

smp = pytest.importorskip(
    "segmentation_models_pytorch",
    reason="segmentation-models-pytorch is not installed here; run bash .ci/run-monailabel",
)

from neurobundles.networks import build_network  # noqa: E402
from neurobundles.networks.smp import SMP_ARCHITECTURES  # noqa: E402
from neurobundles.zoo import bundle_parser  # noqa: E402

pytestmark = pytest.mark.torchvision

MTNEURO = {
    "unet": smp.Unet,
    "unetplusplus": smp.UnetPlusPlus,
    "manet": smp.MAnet,
    "linknet": smp.Linknet,
    "fpn": smp.FPN,
    "pspnet": smp.PSPNet,
    "pan": smp.PAN,
    "deeplabv3plus": smp.DeepLabV3Plus,
}
"""The smp models MTNeuro compared (Table 2 and its code), by the names the bundle takes."""


@pytest.mark.parametrize("architecture", sorted(MTNEURO))
def test_mtneuro_smp_models_build_offline_and_keep_the_slice_grid(architecture):
    torch.manual_seed(0)
    network = build_network(architecture, spatial_dims=2, in_channels=1, out_channels=4, encoder_weights=None).eval()
    assert isinstance(network, MTNEURO[architecture])
    with torch.no_grad():
        assert network(torch.rand(2, 1, 128, 128)).shape == (2, 4, 128, 128)  # PAN needs sides of 128+


def test_every_listed_architecture_is_an_smp_model():
    for name, cls in SMP_ARCHITECTURES.items():
        assert hasattr(smp, cls), name


def test_the_2d_bundle_builds_an_smp_model_from_its_config():
    parser = bundle_parser(
        "mtneuro_task2_unet2d", "train", architecture="manet", encoder_name="resnet18", task="task2_2D_3class"
    )
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, smp.MAnet)
    assert network.segmentation_head[0].out_channels == 3 and network.encoder.conv1.in_channels == 1


def test_an_smp_model_learns_one_step_through_the_bundle_loss():
    torch.manual_seed(0)
    network = build_network("fpn", out_channels=4)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    images, labels = torch.rand(2, 1, 64, 64), torch.randint(0, 4, (2, 1, 64, 64))
    loss_function = bundle_parser("mtneuro_task2_unet2d", "train").get_parsed_content("loss")
    before = loss_function(network(images), labels)
    before.backward()
    optimizer.step()
    assert torch.isfinite(before) and before.item() > 0
