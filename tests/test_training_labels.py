"""Training targets from FreeSurfer ids: grey/white, DKT31 and the 104 aparc+aseg classes, and train configs that
match the inference configs they train for."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from neurobundles.labels import DKT31_IDS, LabelTable, dkt31_map, tissue_map
from neurobundles.transforms import ClassesToLabels, MapLabels
from neurobundles.zoo import bundle_names, bundle_parser, bundle_path, load_metadata

TRAINABLE = [name for name in bundle_names() if (bundle_path(name) / "configs" / "train.json").is_file()]


def _config(bundle: str, name: str) -> dict:
    return json.loads((bundle_path(bundle) / "configs" / f"{name}.json").read_text())


def test_dkt31_has_31_regions_per_hemisphere_without_the_ones_dkt_removed():
    assert len(DKT31_IDS) == 31 and set(DKT31_IDS) == set(range(1002, 1036)) - {1004, 1032, 1033}


def test_dkt31_map_merges_hemispheres_and_drops_everything_else():
    out = MapLabels(dkt31_map())(torch.tensor([1002, 2002, 1035, 2035, 1001, 2032, 1033, 17, 2, 0]))
    assert out.tolist() == [1, 1, 31, 31, 0, 0, 0, 0, 0, 0]


def test_grey_white_targets_use_the_pretrained_models_class_order():
    out = MapLabels(tissue_map(white=1, grey=2))(torch.tensor([2, 41, 251, 16, 3, 1028, 10, 17, 24, 4, 0]))
    assert out.tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0]
    assert load_metadata("meshnet_hcp_tissue")["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "White-Matter",
        "2": "Grey-Matter",
    }


@pytest.mark.parametrize("bundle", ["meshnet_mindboggle_dkt31", "unet_mindboggle_dkt31"])
def test_mindboggle_bundles_train_on_the_dkt31_classes(bundle):
    label_map = bundle_parser(bundle, "train").get_parsed_content("label_map")
    assert {k: v for k, v in label_map.items() if v} == dkt31_map()


def test_104_class_targets_follow_the_published_models_class_order():
    label_map = bundle_parser("meshnet_hcp_aparc104", "train").get_parsed_content("label_map")
    names = load_metadata("meshnet_hcp_aparc104")["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert names[str(label_map[17])] == "Left-Hippocampus" and names[str(label_map[1028])] == "ctx-lh-superiorfrontal"
    assert names[str(label_map[2035])] == "ctx-rh-insula" and names[str(label_map[255])] == "CC_Anterior"
    assert sorted(set(label_map.values())) == list(range(104))


@pytest.mark.parametrize("bundle", TRAINABLE)
def test_train_config_builds_the_inference_network(bundle):
    assert _config(bundle, "train")["network_def"] == _config(bundle, "inference")["network_def"]


CONFORMING = [
    name
    for name in TRAINABLE
    if isinstance(_config(name, "train").get("volume_transforms"), list) and not name.startswith("deepnat_")
]
"""Train configs that preprocess whole volumes as inference does; other families have their own tests (DeepNAT's
training mask comes from the labels, its inference mask from a file, the image or a network)."""


@pytest.mark.parametrize("bundle", CONFORMING)
def test_train_config_preprocesses_images_as_inference_does(bundle):
    """Same transforms with the same settings (the training ones also carry the label along)."""
    train = [t for t in _config(bundle, "train")["volume_transforms"] if t["_target_"] != "LoadImaged"]
    inference = _config(bundle, "inference")["image_transforms"]
    targets = [t["_target_"] for t in train if t["keys"] != "label"]
    assert targets == [t["_target_"] for t in inference]
    for ours, theirs in zip([t for t in train if t["keys"] != "label"], inference):
        settings = {k: v for k, v in ours.items() if k not in ("keys", "mode", "size", "voxel_size")}
        assert settings == {k: v for k, v in theirs.items() if k not in ("keys", "size", "voxel_size")}


@pytest.mark.slow
def test_dkt31_classes_split_back_into_hemispheres_on_fsaverage(fsaverage):
    """Merged DKT31 classes from FreeSurfer's aparc+aseg come back to the right lh/rh ids when written."""
    image = nib.load(str(fsaverage / "mri" / "aparc+aseg.mgz"))
    ids = np.asarray(image.dataobj).astype(np.int64)
    classes = MapLabels(dkt31_map())(ids[None])
    table = LabelTable(
        load_metadata("meshnet_mindboggle_dkt31")["network_data_format"]["outputs"]["pred"]["channel_def"],
        bundle_path("meshnet_mindboggle_dkt31") / "configs" / "labels.txt",
    )
    written = ClassesToLabels(table)(MetaTensor(torch.as_tensor(classes, dtype=torch.float32), affine=image.affine))
    cortex = classes[0] > 0
    assert (written[0].numpy()[cortex] == ids[cortex]).mean() > 0.999
