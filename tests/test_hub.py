"""Weights and samples come from the cache, a mirror, or their URL — always hash-checked."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from neurobundles.errors import WeightsUnavailableError
from neurobundles.zoo import hub
from neurobundles.zoo import samples as samples_module


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROBUNDLES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NEUROBUNDLES_DATA", str(tmp_path / "mirror"))
    return tmp_path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _remote(tmp_path: Path, content: bytes, name="brainchop/m/model.pth", url=None) -> hub.RemoteFile:
    source = tmp_path / "published" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    return hub.RemoteFile(name, url or source.as_uri(), hashlib.sha256(content).hexdigest())


def test_download_lands_in_the_cache_verified(isolated):
    remote = _remote(isolated, b"weights")
    path = hub.fetch(remote)
    assert path == isolated / "home" / remote.name and path.read_bytes() == b"weights"
    assert hub.is_cached(remote)


def test_mirror_is_used_before_the_url(isolated):
    remote = hub.RemoteFile("brainchop/m/model.pth", "http://127.0.0.1:9/unreachable", hashlib.sha256(b"w").hexdigest())
    (isolated / "mirror" / "brainchop" / "m").mkdir(parents=True)
    (isolated / "mirror" / "brainchop" / "m" / "model.pth").write_bytes(b"w")
    assert hub.fetch(remote).read_bytes() == b"w"


def test_corrupt_download_is_rejected_and_not_kept(isolated):
    remote = _remote(isolated, b"weights")
    tampered = hub.RemoteFile(remote.name, remote.url, "0" * 64)
    with pytest.raises(WeightsUnavailableError, match=r"sha256 differs from the published 0000"):
        hub.fetch(tampered)
    assert not any((isolated / "home").rglob("model.pth"))


def test_offline_without_mirror_names_file_url_and_variable(isolated):
    remote = hub.RemoteFile("brainchop/x/model.pth", "http://127.0.0.1:9/model.pth", "0" * 64)
    with pytest.raises(WeightsUnavailableError) as caught:
        hub.fetch(remote)
    message = str(caught.value)
    assert "brainchop/x/model.pth" in message and "http://127.0.0.1:9/model.pth" in message
    assert "NEUROBUNDLES_DATA" in message


def test_member_of_an_archive_is_extracted_with_its_siblings(isolated, monkeypatch):
    archive = isolated / "data.whl"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("pkg/a.mgz", b"A")
        bundle.writestr("pkg/b.mgz", b"B")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    samples = {
        name: hub.RemoteFile(
            f"freesurfer/s/{name}.mgz",
            archive.as_uri(),
            hashlib.sha256(name.upper().encode()).hexdigest(),
            f"pkg/{name}.mgz",
            digest,
        )
        for name in ("a", "b")
    }
    monkeypatch.setattr(samples_module, "SAMPLES", samples)
    assert samples_module.fetch_sample("a").read_bytes() == b"A"
    assert hub.is_cached(samples["b"])
    assert not (isolated / "home" / "archives" / "data.whl").exists()


def test_bundle_large_files_resolve_to_published_weights(shared_data):
    from neurobundles.zoo import bundle_path

    root = bundle_path("meshnet_hcp_tissue")
    path = hub.bundle_file(root, "models/model.pth")
    assert _sha256(path) == _sha256(shared_data / "brainchop" / "model5_gw_ae" / "model.pth")


def test_modified_weights_inside_a_bundle_are_not_used_silently(tmp_path, shared_data):
    from neurobundles.zoo import bundle_path

    copy = tmp_path / "bundle"
    (copy / "models").mkdir(parents=True)
    (copy / "large_files.yml").write_text((bundle_path("meshnet_hcp_tissue") / "large_files.yml").read_text())
    (copy / "models" / "model.pth").write_bytes(b"edited")
    with pytest.raises(WeightsUnavailableError, match="sha256 differs from the published"):
        hub.bundle_file(copy, "models/model.pth")


def test_registered_samples_match_the_shared_data(shared_data):
    for remote in samples_module.SAMPLES.values():
        assert _sha256(shared_data / remote.name) == remote.sha256, remote.name
