"""Release zips and the model_info.json index, downloaded with monai.bundle from a local server and run offline."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import download
from monai.bundle.scripts import _get_git_release_url

from conftest import REPO
from neurobundles.cli import main
from neurobundles.errors import WeightsUnavailableError
from neurobundles.networks import load_pretrained
from neurobundles.zoo import (
    bundle_file,
    bundle_names,
    bundle_parser,
    bundle_path,
    bundle_remote_files,
    load_metadata,
    load_network,
    run_workflow,
)
from neurobundles.zoo.packaging import export_bundle, package, release_url, sha1sum

BUNDLES = bundle_names()
PUBLISHED = [name for name in BUNDLES if bundle_remote_files(bundle_path(name))]
UNPUBLISHED = [name for name in BUNDLES if name not in PUBLISHED]
"""Bundles without published weights (trained by their users) ship configs only."""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A static web server on 127.0.0.1 over an empty release folder: (folder, base URL)."""
    folder = tmp_path_factory.mktemp("release")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def release(server, shared_data) -> dict[str, Path]:
    """Every bundle packaged into the served release folder."""
    folder, base_url = server
    return {name: package(name, folder, base_url=base_url) for name in BUNDLES}


def _version(name: str) -> str:
    return load_metadata(name)["version"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_zip_is_named_with_the_version_and_has_one_top_level_folder(release, bundle):
    assert release[bundle].name == f"{bundle}_v{_version(bundle)}.zip"
    with zipfile.ZipFile(release[bundle]) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {bundle}
    assert f"{bundle}/configs/metadata.json" in names and f"{bundle}/configs/inference.json" in names


@pytest.mark.parametrize("bundle", BUNDLES)
def test_zip_keeps_large_files_yml_and_holds_each_listed_file_verified(release, bundle):
    listing = bundle_path(bundle) / "large_files.yml"
    with zipfile.ZipFile(release[bundle]) as archive:
        assert archive.read(f"{bundle}/large_files.yml") == listing.read_bytes()
        for entry in yaml.safe_load(listing.read_text())["large_files"]:
            content = archive.read(f"{bundle}/{entry['path']}")
            assert hashlib.sha256(content).hexdigest() == entry["hash_val"]


@pytest.mark.parametrize("bundle", PUBLISHED)
def test_model_pt_is_a_state_dict_of_network_def_with_the_published_weights(release, bundle, tmp_path):
    with zipfile.ZipFile(release[bundle]) as archive:
        archive.extractall(tmp_path)
    state = torch.load(tmp_path / bundle / "models" / "model.pt", weights_only=True)
    parser = bundle_parser(bundle)
    network_def = parser.get_parsed_content("network_def")
    network_def.load_state_dict(state, strict=True)
    published = load_network(bundle).state_dict()
    assert state.keys() == published.keys()
    assert all(torch.equal(state[key], published[key]) for key in state)
    assert load_pretrained(parser.get_parsed_content("network_def"), tmp_path / bundle / "models" / "model.pt")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_index_records_the_sha1_and_url_of_each_zip(release, server, bundle):
    folder, base_url = server
    index = json.loads((folder / "models" / "model_info.json").read_text())
    key = f"{bundle}_v{_version(bundle)}"
    assert index[key] == {"checksum": sha1sum(release[bundle]), "source": f"{base_url}/{key}.zip"}


def test_packaging_again_gives_the_same_bytes(release, tmp_path):
    bundle = BUNDLES[0]
    again = package(bundle, tmp_path, base_url="http://127.0.0.1:9")
    assert sha1sum(again) == sha1sum(release[bundle])


def test_a_changed_bundle_under_a_published_version_is_refused(release, server, tmp_path):
    folder, base_url = server
    bundle = BUNDLES[0]
    changed = tmp_path / bundle
    shutil.copytree(bundle_path(bundle), changed, ignore=shutil.ignore_patterns("models", "eval"))
    (changed / "docs" / "README.md").write_text("changed\n")
    published = release[bundle].read_bytes()
    with pytest.raises(ValueError, match=r"already published with sha1 .* Bump the bundle's version"):
        package(changed, folder, base_url=base_url)
    assert release[bundle].read_bytes() == published


def test_github_release_url_is_where_monai_bundle_download_looks():
    filename = "meshnet_hcp_tissue_v0.1.0.zip"
    assert release_url(filename, repo="owner/repo/v1") == _get_git_release_url("owner", "repo", "v1", filename)


def test_packaging_without_a_url_says_what_to_give():
    with pytest.raises(ValueError, match=r"repo='OWNER/REPO/TAG' .* or base_url"):
        release_url("x_v0.1.0.zip")


def _download(base_url: str, bundle: str, downloads: Path) -> Path:
    """``monai.bundle.download`` of the release entry in ``model_info.json``; returns the bundle folder."""
    with urllib.request.urlopen(f"{base_url}/models/model_info.json", timeout=30) as response:
        entry = json.load(response)[f"{bundle}_v{_version(bundle)}"]
    download(name=bundle, url=entry["source"], bundle_dir=str(downloads), progress=False)
    assert sha1sum(downloads / f"{bundle}.zip") == entry["checksum"]
    return downloads / bundle


def _isolated_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The package only: no bundles, no mirror, an empty cache (whose kernels/ may fill, weights may not)."""
    empty, home = tmp_path / "empty", tmp_path / "home"
    for folder in (empty, home):
        folder.mkdir()
    env = os.environ | {
        "PYTHONPATH": str(REPO / "common"),
        "NEUROBUNDLES_BUNDLES": str(empty),
        "NEUROBUNDLES_DATA": str(empty),
        "NEUROBUNDLES_HOME": str(home),
    }
    return env, home


def _fetched(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file() and "kernels" not in p.relative_to(home).parts]


@pytest.mark.parametrize("bundle", PUBLISHED)
def test_downloaded_bundle_loads_its_weights_offline_without_this_repository(release, server, bundle, tmp_path):
    bundle_dir = _download(server[1], bundle, tmp_path / "downloads")
    env, home = _isolated_env(tmp_path)
    script = "import sys, torch; from neurobundles.zoo import load_network; "
    script += "torch.save(load_network(sys.argv[1]).state_dict(), sys.argv[2])"
    subprocess.run([sys.executable, "-c", script, str(bundle_dir), str(tmp_path / "state.pt")], env=env, check=True)
    assert not _fetched(home), "weights were fetched instead of read from the zip"
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    published = load_network(bundle).state_dict()
    assert loaded.keys() == published.keys()
    assert all(torch.equal(loaded[key], published[key]) for key in published)


@pytest.mark.slow
def test_downloaded_bundle_runs_offline_without_this_repository(release, server, tmp_path, t1_crop):
    """The whole path once (the 5-channel bundle; the others differ only in weights, checked above)."""
    bundle = "meshnet_hcp_tissue"
    bundle_dir = _download(server[1], bundle, tmp_path / "downloads")
    env, home = _isolated_env(tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "t1_crop.nii.gz").symlink_to(t1_crop)
    config = bundle_dir / "configs" / "inference.json"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--dataset_dir", str(inputs)]
    subprocess.run(command, cwd=tmp_path, env=env, check=True)

    written = bundle_dir / "eval" / "t1_crop_seg.nii.gz"  # output_dir defaults to bundle_root/eval
    assert written.is_file(), "bundle_root did not resolve to the downloaded copy"
    assert not _fetched(home), "weights were fetched instead of read from the zip"
    run_workflow(bundle, datalist=[{"image": str(t1_crop), "id": "t1_crop"}], output_dir=str(tmp_path / "repo"))
    ours = np.asarray(nib.load(str(written)).dataobj)
    reference = np.asarray(nib.load(str(tmp_path / "repo" / "t1_crop_seg.nii.gz")).dataobj)
    assert (ours == reference).mean() >= 0.9999


def _trained_copy(tmp_path: Path, bundle: str) -> Path:
    """A copy of an unpublished bundle as its user leaves it after train.json: with models/model.pt and split.json."""
    copy = tmp_path / "trained" / bundle
    shutil.copytree(bundle_path(bundle), copy, ignore=shutil.ignore_patterns("models", "eval"))
    (copy / "models").mkdir()
    torch.save(bundle_parser(copy).get_parsed_content("network_def").state_dict(), copy / "models" / "model.pt")
    (copy / "models" / "split.json").write_text('{"train": [], "valid": [], "test": []}\n')
    return copy


@pytest.mark.parametrize("listing", [None, "large_files: []\n", ""])
def test_bundle_without_large_files_lists_nothing_to_fetch(tmp_path, listing):
    if listing is not None:
        (tmp_path / "large_files.yml").write_text(listing)
    assert bundle_remote_files(tmp_path) == {}
    with pytest.raises(WeightsUnavailableError, match=r"large_files\.yml: lists no file 'models/model\.pth'"):
        bundle_file(tmp_path, "models/model.pth")


@pytest.mark.parametrize("bundle", UNPUBLISHED)
def test_zip_of_a_bundle_without_published_weights_holds_its_configs_only(release, bundle, tmp_path):
    with zipfile.ZipFile(release[bundle]) as archive:
        names = archive.namelist()
    assert f"{bundle}/configs/train.json" in names and not any("/models/" in name for name in names)
    again = package(_trained_copy(tmp_path, bundle), tmp_path / "again", base_url="http://127.0.0.1:9")
    assert sha1sum(again) == sha1sum(release[bundle]), "local training output must not enter a release zip"


@pytest.mark.parametrize("bundle", UNPUBLISHED)
def test_downloaded_untrained_bundle_says_to_train_first(release, bundle, tmp_path, head_phantom):
    with zipfile.ZipFile(release[bundle]) as archive:
        archive.extractall(tmp_path)
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps errors raised inside config expressions
        run_workflow(tmp_path / bundle, datalist=[{"image": str(head_phantom), "id": "x"}], output_dir=str(tmp_path))
    cause = raised.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, WeightsUnavailableError)
    assert re.search(
        r"models/model\.pt: no trained weights.* Train first: python -m monai.bundle run .*train\.json", str(cause)
    )


@pytest.mark.parametrize("bundle", UNPUBLISHED)
def test_export_of_a_trained_bundle_carries_its_weights_and_split(bundle, tmp_path):
    copy = export_bundle(_trained_copy(tmp_path, bundle), tmp_path / "app")
    assert sorted(p.name for p in (copy / "models").iterdir()) == ["model.pt", "split.json"]
    network_def = bundle_parser(copy).get_parsed_content("network_def")
    network_def.load_state_dict(torch.load(copy / "models" / "model.pt", weights_only=True), strict=True)


@pytest.mark.parametrize("bundle", UNPUBLISHED)
def test_export_of_an_untrained_bundle_has_no_weights_for_monailabel_to_serve(bundle, tmp_path):
    clean = tmp_path / "clean" / bundle
    shutil.copytree(bundle_path(bundle), clean, ignore=shutil.ignore_patterns("models", "eval"))
    copy = export_bundle(clean, tmp_path / "app")
    assert (copy / "configs" / "train.json").is_file() and not (copy / "models").exists()


def test_export_command_writes_a_copy_monailabel_can_serve(tmp_path, capsys, shared_data):
    bundle = PUBLISHED[0]
    assert main(["export", bundle, str(tmp_path)]) == 0
    copy = tmp_path / bundle
    assert capsys.readouterr().out.strip() == str(copy)
    assert (copy / "configs" / "inference.json").is_file() and (copy / "configs" / "metadata.json").is_file()
    network_def = bundle_parser(copy).get_parsed_content("network_def")
    network_def.load_state_dict(torch.load(copy / "models" / "model.pt", weights_only=True), strict=True)


def test_package_command_without_a_url_says_what_to_give(tmp_path, capsys):
    assert main(["package", BUNDLES[0], "--output", str(tmp_path)]) == 1
    assert "repo='OWNER/REPO/TAG'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
