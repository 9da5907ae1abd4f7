"""Self-contained bundle copies and Model Zoo release zips.

``python -m monai.bundle download --source github --repo OWNER/REPO/TAG`` fetches
``NAME_v<version>.zip`` from the GitHub release ``TAG`` and finds versions in the repository's
``models/model_info.json`` at that tag; MONAI Label serves a bundle folder holding
``models/model.pt``. :func:`export_bundle` writes such a folder (published weights fetched and
hash-checked, plus ``model.pt`` converted from them) and :func:`package` zips it reproducibly and
records the zip's sha1 and URL in the index.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from neurobundles.atomic import atomic_path, atomic_write_text

from .config import load_network
from .discovery import bundle_path
from .hub import bundle_file, bundle_remote_files

__all__ = [
    "CHECKPOINT",
    "INDEX",
    "export_bundle",
    "package",
    "release_url",
    "sha1sum",
    "update_index",
    "write_state_dict",
]

INDEX = Path("models") / "model_info.json"
"""Where ``monai.bundle`` looks for the version index, relative to the repository (or release folder) root."""

CHECKPOINT = Path("models") / "model.pt"
"""``network_def``'s state dict: what ``ckpt_export`` and MONAI Label load."""

_GENERATED = {"models", "eval", "__pycache__"}
_SOURCE_ONLY = {"family.json"}
"""Files that build a bundle in the checkout (its config family values) but are not part of the bundle."""
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same bundle always zips to the same bytes and sha1


def sha1sum(path: str | Path) -> str:
    """The zip checksum ``model_info.json`` records (as the MONAI Model Zoo's index does)."""
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_files(root: Path) -> list[Path]:
    """The bundle's own files: everything but run-time output, fetched weights, hidden and source-only files."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.relative_to(root).parts[0] not in _GENERATED
        and path.relative_to(root).as_posix() not in _SOURCE_ONLY
        and "__pycache__" not in path.parts
    )


def export_bundle(bundle: str | Path, dest: str | Path, trained: bool = True) -> Path:
    """Write a self-contained copy of ``bundle`` to ``dest/<name>`` and return it.

    The copy holds the bundle's files, every file of its ``large_files.yml`` (verified by sha256)
    and ``models/model.pt``. A bundle that publishes no weights gets the ``models/model.pt`` (and
    ``split.json``) its ``train.json`` wrote when ``trained``, else none: MONAI Label can then train
    it, and serves it once trained. An existing copy is replaced only once the new one is complete.
    """
    root = bundle_path(bundle)
    dest = Path(dest).expanduser().resolve()
    target = dest / root.name
    if target == root:
        raise ValueError(f"{target}: is the bundle itself; export to another folder.")
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=dest))
    try:
        for source in _source_files(root):
            copy = staging / source.relative_to(root)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
        published = bundle_remote_files(root)
        for relative in published:
            copy = staging / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle_file(root, relative), copy)
        if published:
            write_state_dict(staging, staging / CHECKPOINT)
        elif trained:
            for relative in (CHECKPOINT, CHECKPOINT.with_name("split.json")):
                if (root / relative).is_file():
                    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(root / relative, staging / relative)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_state_dict(bundle: str | Path, target: str | Path) -> Path:
    """Save the inference ``network``'s weights as ``network_def``'s state dict (``models/model.pt`` form).

    The bundle's own ``network`` id loads its published weights (hash-checked), so this works for
    every weight format the bundle accepts; MONAI's tools and MONAI Label read only the result.
    """
    network = load_network(bundle)
    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    buffer = io.BytesIO()  # through a buffer, so the archive's inner folder name (and the zip's sha1) never varies
    torch.save(state, buffer)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return target


def _write_zip(folder: Path, name: str, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{name}/{path.relative_to(folder).as_posix()}", _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


def release_url(filename: str, repo: str | None = None, base_url: str | None = None) -> str:
    """Where ``filename`` will be served: a GitHub release (``OWNER/REPO/TAG``) or any ``base_url``."""
    if (repo is None) == (base_url is None):
        raise ValueError("give exactly one of repo='OWNER/REPO/TAG' (a GitHub release) or base_url (any web server).")
    if base_url is not None:
        return f"{base_url.rstrip('/')}/{filename}"
    parts = str(repo).split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"repo must be OWNER/REPO/TAG as for `monai.bundle download --source github`, got {repo!r}.")
    owner, name, tag = parts
    return f"https://github.com/{owner}/{name}/releases/download/{tag}/{filename}"


def _read_index(index: Path) -> dict[str, dict[str, str]]:
    return json.loads(index.read_text()) if index.is_file() else {}


def _check_unpublished(index: Path, key: str, sha1: str) -> None:
    previous = _read_index(index).get(key)
    if previous and previous.get("checksum") != sha1:
        raise ValueError(
            f"{index}: {key} is already published with sha1 {previous.get('checksum')}, and the new zip's sha1 is "
            f"{sha1}. Bump the bundle's version (and changelog) for a changed bundle, or pass replace=True."
        )


def update_index(index: str | Path, key: str, sha1: str, url: str, replace: bool = False) -> None:
    """Record ``key`` (``NAME_v<version>``) in a ``model_info.json`` index; refuse to change a published entry."""
    index = Path(index)
    if not replace:
        _check_unpublished(index, key, sha1)
    entries = _read_index(index)
    entries[key] = {"checksum": sha1, "source": url}
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, json.dumps(dict(sorted(entries.items())), indent=4) + "\n")


def package(
    bundle: str | Path,
    output: str | Path = "dist",
    repo: str | None = None,
    base_url: str | None = None,
    index: str | Path | None = None,
    replace: bool = False,
) -> Path:
    """Zip ``bundle`` as ``output/NAME_v<version>.zip`` (top-level ``NAME/``) and record it in the index.

    ``index`` defaults to ``output/models/model_info.json``: the release folder then has the
    layout ``monai.bundle download`` reads from a repository at a tag. A bundle without published
    weights is zipped without any local training output, so its zip stays reproducible.
    """
    root = bundle_path(bundle)
    version = json.loads((root / "configs" / "metadata.json").read_text())["version"]
    key = f"{root.name}_v{version}"
    url = release_url(f"{key}.zip", repo, base_url)
    output = Path(output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    target = output / f"{key}.zip"
    index = Path(index) if index is not None else output / INDEX
    with tempfile.TemporaryDirectory(prefix=f"{root.name}-package-") as work, atomic_path(target) as tmp:
        _write_zip(export_bundle(root, work, trained=False), root.name, tmp)
        sha1 = sha1sum(tmp)
        if not replace:
            _check_unpublished(index, key, sha1)  # before the zip replaces a published one
    update_index(index, key, sha1, url, replace=True)
    return target
