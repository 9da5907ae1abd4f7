"""The published MeshNet weights load exactly, in every form they are published in."""

import shutil

import pytest
import torch

from neurobundles.networks import MeshNet, load_pretrained, meshnet_from_brainchop, meshnet_kwargs, read_conv_weights

MODELS = ["model5_gw_ae", "model18cls", "model21_104class", "model30chan50cls"]


@pytest.mark.parametrize("model", MODELS)
def test_tfjs_bin_equals_safetensors_exactly(shared_data, model):
    folder = shared_data / "brainchop" / model
    safetensors = read_conv_weights(folder / "model.pth")
    tfjs = read_conv_weights(folder / "model.bin")
    assert len(safetensors) == len(tfjs)
    for (w1, b1), (w2, b2) in zip(safetensors, tfjs):
        assert torch.equal(w1, w2) and torch.equal(b1, b2)


def test_tfjs_manifest_form_equals_safetensors(shared_data):
    folder = shared_data / "brainchop" / "model21_104class"
    manifest = read_conv_weights(folder / "model_D95.json")
    safetensors = read_conv_weights(folder / "model.pth")
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(manifest, safetensors))


def test_tfjs_only_models_build_from_their_topology(shared_data):
    net = meshnet_from_brainchop(shared_data / "brainchop" / "model30chan18cls" / "model.json")
    assert net.head.conv.out_channels == 18
    assert type(net.features[0].adn.A).__name__ == "ELU"


def test_mindgrab_placeholders_resolve_to_groupnorm_gelu(shared_data):
    folder = shared_data / "brainchop" / "mindgrab"
    kwargs = meshnet_kwargs(folder / "model.json", read_conv_weights(folder / "model.pth"))
    assert kwargs["channels"] == [15] * 25
    assert kwargs["dilations"] == [16, 8, 4, 2, 1] * 5
    assert kwargs["norm"] == ("group", {"num_groups": 15, "affine": False})
    assert kwargs["act"] == "gelu" and kwargs["bias"] is False and kwargs["out_channels"] == 2


def test_bundle_network_definition_matches_the_published_model(shared_data):
    from monai.bundle import ConfigParser

    from neurobundles.zoo import bundle_path

    parser = ConfigParser()
    parser.read_config(str(bundle_path("meshnet_hcp_tissue") / "configs" / "inference.json"))
    ours = parser.get_parsed_content("network_def")
    published = meshnet_from_brainchop(shared_data / "brainchop" / "model5_gw_ae" / "model.json")
    assert str(ours) == str(published)


def test_own_checkpoint_round_trips(tmp_path, shared_data):
    net = meshnet_from_brainchop(shared_data / "brainchop" / "model5_gw_ae" / "model.json")
    torch.save({"network": net.state_dict()}, tmp_path / "finetuned.pt")
    fresh = load_pretrained(
        MeshNet(out_channels=3, channels=5, dilations=(1, 2, 4, 8, 16, 8, 4, 2, 1)), tmp_path / "finetuned.pt"
    )
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), fresh.state_dict().values()))


def test_wrong_architecture_names_the_file_and_the_fix(shared_data):
    weights = shared_data / "brainchop" / "model5_gw_ae" / "model.pth"
    with pytest.raises(ValueError, match=r"model\.pth: layer 0 weight has shape \(5, 1, 3, 3, 3\).*channels"):
        load_pretrained(MeshNet(out_channels=3, channels=8, dilations=(1, 2, 4, 8, 16, 8, 4, 2, 1)), weights)


def test_tfjs_without_its_shard_is_reported(tmp_path, shared_data):
    shutil.copy(shared_data / "brainchop" / "model11_gw_ae" / "model.json", tmp_path / "model.json")
    with pytest.raises(FileNotFoundError, match="weight shard"):
        read_conv_weights(tmp_path / "model.json")


def test_non_weight_file_is_refused(tmp_path):
    junk = tmp_path / "model.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a MeshNet weight file"):
        read_conv_weights(junk)
