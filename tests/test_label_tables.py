"""Label tables: class names resolve to FreeSurfer ids, and every bundle's table agrees with FreeSurfer."""

import json

import pytest

from neurobundles.labels import LabelTable, LutEntry, read_lut, write_lut
from neurobundles.zoo import bundle_names, bundle_path, load_metadata


@pytest.fixture
def lut(tmp_path):
    path = tmp_path / "labels.txt"
    write_lut(
        path,
        {
            0: LutEntry("Unknown", (0, 0, 0)),
            4: LutEntry("Left-Lateral-Ventricle", (1, 1, 1)),
            43: LutEntry("Right-Lateral-Ventricle", (1, 1, 1)),
            16: LutEntry("Brain-Stem", (2, 2, 2)),
            17: LutEntry("Left-Hippocampus", (3, 3, 3)),
            53: LutEntry("Right-Hippocampus", (3, 3, 3)),
            218: LutEntry("Hippocampus", (9, 9, 9)),
            1028: LutEntry("ctx-lh-superiorfrontal", (4, 4, 4)),
            2028: LutEntry("ctx-rh-superiorfrontal", (4, 4, 4)),
        },
    )
    return path


def test_merged_classes_resolve_to_left_right_pairs(lut):
    table = LabelTable({"0": "background", "1": "Hippocampus", "2": "ctx-superiorfrontal", "3": "Brain-Stem"}, lut)
    assert table.class_values == [(0,), (17, 53), (1028, 2028), (16,)]
    assert table.needs_hemispheres


def test_unknown_class_name_names_the_table(lut):
    with pytest.raises(ValueError, match=r"labels\.txt: class 1 'Thalamus' has no entry"):
        LabelTable({"0": "background", "1": "Thalamus"}, lut)


def test_brain_volume_leaves_out_ventricles(lut):
    table = LabelTable({"0": "background", "1": "Lateral-Ventricle", "2": "Hippocampus", "3": "Brain-Stem"}, lut)
    assert table.brain_values() == {17, 53, 16}


def test_class_space_writes_indices_but_still_knows_freesurfer(lut):
    table = LabelTable({"0": "background", "1": "Lateral-Ventricle", "2": "Hippocampus"}, lut, space="classes")
    assert table.class_values == [(0,), (1,), (2,)]
    assert table.brain_values() == {2}
    assert table.freesurfer_to_class() == {0: 0, 4: 1, 43: 1, 17: 2, 53: 2}


@pytest.mark.parametrize("name", bundle_names())
def test_every_bundle_table_resolves_all_its_classes(name):
    metadata = load_metadata(name)
    channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert len(channel_def) == metadata["network_data_format"]["outputs"]["pred"]["num_channels"]
    space = json.loads((bundle_path(name) / "configs" / "inference.json").read_text())["label_space"]
    table = LabelTable(channel_def, bundle_path(name) / "configs" / "labels.txt", space)
    written = {value for values in table.class_values for value in values}
    assert written == set(table.entries), "labels.txt must list exactly the values the bundle writes"


@pytest.mark.parametrize("name", bundle_names())
def test_freesurfer_ids_carry_freesurfers_names_and_colours(name, shared_data):
    freesurfer = read_lut(shared_data / "freesurfer" / "FreeSurferColorLUT.txt")
    if json.loads((bundle_path(name) / "configs" / "inference.json").read_text())["label_space"] != "freesurfer":
        pytest.skip("class-index bundle")
    for value, entry in read_lut(bundle_path(name) / "configs" / "labels.txt").items():
        assert freesurfer[value] == entry, value


def test_bundle_classes_follow_the_published_colormaps(shared_data):
    """Our names are brainchop's, renamed only where FreeSurfer 7 names differ."""
    renames = {
        "BG": "background",
        "Unknown": "background",
        "Thalamus-Proper*": "Thalamus",
        "Left-Thalamus-Proper*": "Left-Thalamus",
        "Right-Thalamus-Proper*": "Right-Thalamus",
        "Ventricle": "Lateral-Ventricle",
        "Inferior-Lateral-Ventricle": "Inf-Lat-Vent",
        "Cerebellum": "Cerebellum-Cortex",
        "Corpus callosum": "Corpus_Callosum",
    }
    for bundle, model in [
        ("meshnet_hcp_aparc104", "model21_104class"),
        ("meshnet_hcp_dkt50", "model30chan50cls"),
        ("meshnet_hcp_subcortical", "model18cls"),
    ]:
        published = json.loads((shared_data / "brainchop" / model / "colormap.json").read_text())["labels"]
        ours = load_metadata(bundle)["network_data_format"]["outputs"]["pred"]["channel_def"]
        assert [ours[str(i)] for i in range(len(ours))] == [renames.get(n, n) for n in published], bundle
