"""neurobundles compare: both networks trained on the same subjects, then one table (and JSON/CSV) side by side."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest

from layouts import make_mindboggle
from neurobundles.cli import main
from neurobundles.tools.compare import BUNDLES

TINY = [
    "--volume_size", "24", "--voxel_size", "1.0", "--roi_size", "12", "--crops_per_volume", "2", "--batch_size", "2",
    "--max_epochs", "1", "--num_samples", "8", "--repeats", "1", "--valid", "0", "--test", "1", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """(output folder, printed table) of one small comparison on a Mindboggle-layout dataset."""
    root = tmp_path_factory.mktemp("compare")
    dataset = make_mindboggle(root / "Mindboggle101_volumes", groups={"OASIS-TRT-20": 3})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["compare", "--dataset_dir", str(dataset), "--output", str(root / "out"), *TINY]) == 0
    lines = printed.getvalue().splitlines()  # training logs come first, the table last
    header = max(i for i, line in enumerate(lines) if line.split() == [*BUNDLES, "advantage"])
    return root / "out", "\n".join(lines[header:])


def test_table_lists_both_networks_side_by_side(compared):
    _, printed = compared
    for label in ("parameters", "checkpoint (MB)", "sub-volumes/s", "full volume (s)", "mean Dice"):
        assert any(line.startswith(label) for line in printed.splitlines()), label


def test_meshnet_is_hundreds_of_times_smaller_than_the_unet(compared):
    output, printed = compared
    results = json.loads((output / "compare.json").read_text())
    meshnet, unet = (results[name] for name in BUNDLES)
    assert (meshnet["parameters"], unet["parameters"]) == (73_154, 23_347_168)
    assert unet["checkpoint_mb"] / meshnet["checkpoint_mb"] > 100
    assert next(line for line in printed.splitlines() if line.startswith("parameters")).endswith("319×")


def test_both_networks_are_scored_on_the_same_test_subject_and_classes(compared):
    output, _ = compared
    results = json.loads((output / "compare.json").read_text())
    test = results["settings"]["split"]["test"]
    for name in BUNDLES:
        assert list(json.loads((output / name / "test" / "dice.json").read_text())["cases"]) == test
    assert len(test) == 1 and results[BUNDLES[0]]["dice"].keys() == results[BUNDLES[1]]["dice"].keys()
    for name in BUNDLES:
        assert 0.0 <= results[name]["mean_dice"] <= 1.0 and results[name]["subvolumes_per_second"] > 0


def test_csv_holds_the_same_rows_as_the_table(compared):
    output, printed = compared
    rows = list(csv.reader((output / "compare.csv").open()))
    assert rows[0] == ["", *BUNDLES, "advantage"]
    assert [row[0] for row in rows[1:]] == [line.split("  ")[0].strip() for line in printed.splitlines()[1:-1]]


def test_dataset_without_test_subjects_is_refused(tmp_path, capsys):
    dataset = make_mindboggle(tmp_path / "Mindboggle101_volumes", groups={"HLN-12": 2})
    assert main(["compare", "--dataset_dir", str(dataset), "--output", str(tmp_path / "out"), "--test", "0"]) == 1
    assert "no test subject to score" in capsys.readouterr().err


def test_list_tells_untrained_bundles_apart(capsys):
    assert main(["list"]) == 0
    assert "meshnet_mindboggle_dkt31  (v0.2.0, no weights: train with train.json)" in capsys.readouterr().out
