"""Zoo conformance: every bundle passes MONAI's checks and ours; broken bundles fail with a useful message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO
from neurobundles.cli import main
from neurobundles.zoo import bundle_names, bundle_path, conformance

BUNDLES = bundle_names()
TEMPLATE = "meshnet_hcp_tissue"  # the broken fixtures start from this bundle


@pytest.mark.parametrize("check", list(conformance.CHECKS))
@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_passes_check(bundle, check, shared_data):
    conformance.CHECKS[check](bundle)


def test_monai_verify_metadata_command_accepts_a_bundle_with_the_shipped_schema():
    """The command a Model Zoo user types (every bundle goes through the same MONAI function in-process, above)."""
    bundle = TEMPLATE
    command = [
        sys.executable, "-m", "monai.bundle", "verify_metadata",
        "--meta_file", str(bundle_path(bundle) / "configs" / "metadata.json"),
        "--filepath", str(conformance.METADATA_SCHEMA),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO / "common")}
    )
    assert result.returncode == 0, result.stderr
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_shipped_schema_is_a_valid_json_schema():
    import jsonschema

    jsonschema.Draft7Validator.check_schema(json.loads(conformance.METADATA_SCHEMA.read_text()))


# --- deliberately broken bundles ------------------------------------------------------------------


def _broken(tmp_path: Path, name: str, edit: Callable[[dict, dict], None]) -> Path:
    """A copy of the template bundle named ``name`` whose metadata and inference config ``edit`` changes."""
    root = tmp_path / name
    shutil.copytree(bundle_path(TEMPLATE), root, ignore=shutil.ignore_patterns("models", "eval"))
    meta_file, config_file = root / "configs" / "metadata.json", root / "configs" / "inference.json"
    metadata, config = json.loads(meta_file.read_text()), json.loads(config_file.read_text())
    edit(metadata, config)
    meta_file.write_text(json.dumps(metadata, indent=4))
    config_file.write_text(json.dumps(config, indent=4))
    return root


def _pred(metadata: dict) -> dict:
    return metadata["network_data_format"]["outputs"]["pred"]


def test_missing_field_fails_metadata_check_naming_the_field(tmp_path):
    root = _broken(tmp_path, "no_task", lambda meta, _: meta.pop("task"))
    with pytest.raises(
        conformance.BundleCheckError, match=r"^no_task: metadata: .*metadata\.json.*'task' is a required"
    ):
        conformance.check_metadata(root)


def test_missing_channel_def_fails_metadata_check_naming_where(tmp_path):
    root = _broken(tmp_path, "no_labels", lambda meta, _: _pred(meta).pop("channel_def"))
    with pytest.raises(
        conformance.BundleCheckError, match=r"at /network_data_format/outputs/pred: 'channel_def' is a required"
    ):
        conformance.check_metadata(root)


def test_changelog_without_the_current_version_fails_metadata_check(tmp_path):
    root = _broken(tmp_path, "stale_log", lambda meta, _: meta.update(version="9.9.9"))
    with pytest.raises(conformance.BundleCheckError, match=r"changelog has no entry for version 9\.9\.9"):
        conformance.check_metadata(root)


def _four_outputs(_: dict, config: dict) -> None:
    config["network_def"]["out_channels"] = 4


def test_wrong_channel_count_fails_verify_net_in_out(tmp_path):
    root = _broken(tmp_path, "four_out", _four_outputs)
    with pytest.raises(conformance.BundleCheckError, match=r"^four_out: verify_net_in_out: .*`4` doesn't match: `3`"):
        conformance.check_net_in_out(root, conformance.quick_shape(root))


def test_wrong_channel_count_fails_labels_check(tmp_path):
    root = _broken(tmp_path, "four_out", _four_outputs)
    with pytest.raises(conformance.BundleCheckError, match=r"outputs 4 channels but .* names 3 labels"):
        conformance.check_labels(root)


def test_wrong_channel_count_fails_ckpt_export(tmp_path, shared_data):
    root = _broken(tmp_path, "four_out", _four_outputs)
    with pytest.raises(
        conformance.BundleCheckError,
        match=r"^four_out: ckpt_export: .*has shape \(3, 5, 1, 1, 1\), the network expects \(4, 5, 1, 1, 1\)",
    ):
        conformance.check_export(root)


def test_channel_def_shorter_than_num_channels_fails_labels_check(tmp_path):
    root = _broken(tmp_path, "unnamed", lambda meta, _: _pred(meta).update(num_channels=4))
    with pytest.raises(conformance.BundleCheckError, match=r"names channels \['0', '1', '2'\] but num_channels is 4"):
        conformance.check_labels(root)


def test_label_table_not_matching_channel_def_fails_labels_check(tmp_path):
    swapped = {"0": "background", "1": "Grey-Matter", "2": "White-Matter"}
    root = _broken(tmp_path, "swapped", lambda _, config: config.update(label_names=swapped))
    with pytest.raises(conformance.BundleCheckError, match=r"1: 'Grey-Matter' vs 'White-Matter'"):
        conformance.check_labels(root)


def test_colour_table_missing_a_class_fails_labels_check(tmp_path):
    root = _broken(tmp_path, "short_lut", lambda _, config: None)
    lut = root / "configs" / "labels.txt"
    lut.write_text("\n".join(line for line in lut.read_text().splitlines() if not line.startswith("2 ")) + "\n")
    with pytest.raises(conformance.BundleCheckError, match=r"labels\.txt.*lists \[0, 1\].*writes \[0, 1, 2\]"):
        conformance.check_labels(root)


def test_metadata_reference_in_inference_config_fails_monailabel_check(tmp_path):
    meta_ref = "@_meta_#network_data_format#outputs#pred#channel_def"
    root = _broken(tmp_path, "meta_ref", lambda _, config: config.update(label_names=meta_ref))
    with pytest.raises(conformance.BundleCheckError, match=r"'postprocessing' cannot be built the way MONAI Label"):
        conformance.check_monailabel_config(root)


def _write_train(root: Path, config: dict) -> None:
    (root / "configs" / "train.json").write_text(json.dumps(config))


def test_train_config_without_the_ids_monailabel_overrides_fails(tmp_path):
    root = _broken(tmp_path, "bad_train", lambda meta, config: None)
    _write_train(root, {"network_def": {}, "network": "@network_def", "device": "cpu", "train": {"dataset": {}}})
    with pytest.raises(
        conformance.BundleCheckError, match=r"lacks train#dataset#data, train#trainer#max_epochs, validate#dataset#data"
    ):
        conformance.check_train_config(root)


def test_train_config_with_the_ids_monailabel_overrides_passes(tmp_path):
    root = _broken(tmp_path, "good_train", lambda meta, config: None)
    train = {"network_def": {}, "network": "@network_def", "device": "cpu"}
    train["train"] = {"dataset": {"data": []}, "trainer": {"max_epochs": 1}}
    train["validate"] = {"dataset": {"data": []}}
    _write_train(root, train)
    conformance.check_train_config(root)


def test_check_command_reports_every_check_and_fails_for_a_broken_bundle(tmp_path, capsys):
    root = _broken(tmp_path, "swapped", lambda _, config: config.update(label_names={"0": "a", "1": "b", "2": "c"}))
    assert main(["check", str(root)]) == 1
    captured = capsys.readouterr()
    assert "FAIL  " + str(root) + "  labels: label_names" in captured.out
    assert f"ok    {root}  metadata" in captured.out
    assert "1 check(s) failed" in captured.err
