"""A bundle runs from wherever it lands: a release zip unpacked anywhere, with ``neurobundles`` installed from a wheel.

The run uses a fresh virtual environment whose only ``neurobundles`` is the wheel built from this checkout (its
other packages are the test environment's, added as a plain path so the editable install is not loaded), and a
Python audit hook fails the run if any file of the checkout is opened.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO
from neurobundles.zoo import run_workflow
from neurobundles.zoo.packaging import package

pytestmark = pytest.mark.slow

BUNDLE = "meshnet_hcp_tissue"

GUARD = textwrap.dedent(
    """
    import runpy, sys
    checkout, environment = sys.argv[1], sys.argv[2]
    touched = []

    def audit(event, args):
        path = args[0] if event == "open" and isinstance(args[0], str) else ""
        if path.startswith(checkout) and not path.startswith(environment):
            touched.append(path)

    sys.addaudithook(audit)
    import neurobundles
    assert not neurobundles.__file__.startswith(checkout), neurobundles.__file__
    mode, rest = sys.argv[3], sys.argv[4:]
    try:
        if mode == "module":
            sys.argv = rest
            runpy.run_module(rest[0], run_name="__main__", alter_sys=True)
        else:
            exec(rest[0])
    except SystemExit as exit:
        if exit.code:
            raise
    if touched:
        print("CHECKOUT FILES READ:", sorted(set(touched)), file=sys.stderr)
        sys.exit(3)
    """
)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """Python of a fresh venv holding the wheel of this checkout, and the test environment's other packages."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO / "common", source / "common", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), "."]
    subprocess.run(build, cwd=source, check=True, capture_output=True)
    wheel = next(work.glob("neurobundles-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / "venv")], check=True)
    python = work / "venv" / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    (site / "test-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    with zipfile.ZipFile(wheel) as archive:  # installing a pure-Python wheel is unpacking it into site-packages
        archive.extractall(site)
    return python


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory, shared_data) -> Path:
    """The bundle's release zip, unpacked far from the checkout."""
    work = tmp_path_factory.mktemp("release")
    with zipfile.ZipFile(package(BUNDLE, work / "dist", base_url="http://127.0.0.1:9")) as archive:
        archive.extractall(work / "unpacked")
    return work / "unpacked" / BUNDLE


@pytest.fixture(scope="module")
def reference(tmp_path_factory, t1_crop) -> Path:
    """The checkout's own run on t1_crop."""
    output = tmp_path_factory.mktemp("reference")
    run_workflow(BUNDLE, "inference", datalist=[{"image": str(t1_crop), "id": "t1"}], output_dir=str(output))
    return output


def _run(python: Path, cwd: Path, mode: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEUROBUNDLES_BUNDLES")}
    env["NEUROBUNDLES_HOME"] = str(cwd / "home")
    cwd.mkdir(parents=True, exist_ok=True)
    guard = cwd / "guard.py"
    guard.write_text(GUARD)
    command = [python, str(guard), str(REPO), sys.prefix, mode, *args]  # the test environment may sit in the checkout
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def _same_outputs(output: Path, reference: Path) -> None:
    for name in ("t1_seg.nii.gz", "t1_volumes.csv"):
        assert (output / name).is_file(), name
    ours = np.asarray(nib.load(str(output / "t1_seg.nii.gz")).dataobj)
    theirs = np.asarray(nib.load(str(reference / "t1_seg.nii.gz")).dataobj)
    assert np.array_equal(ours, theirs)
    assert (output / "t1_volumes.csv").read_text() == (reference / "t1_volumes.csv").read_text()


def _datalist(t1: Path) -> str:
    return str([{"image": str(t1), "id": "t1"}])


def test_command_line_with_bundle_root(wheel_env, unpacked, reference, t1_crop, tmp_path):
    config = unpacked / "configs" / "inference.json"
    args = ["--config_file", str(config), "--bundle_root", str(unpacked), "--datalist", _datalist(t1_crop)]
    result = _run(wheel_env, tmp_path, "module", "monai.bundle", "run", *args, "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    _same_outputs(tmp_path / "out", reference)


def test_python_api_without_bundle_root(wheel_env, unpacked, reference, t1_crop, tmp_path):
    config = unpacked / "configs" / "inference.json"
    call = f"import monai.bundle; monai.bundle.run(config_file={str(config)!r}, datalist={_datalist(t1_crop)}, "
    call += f"output_dir={str(tmp_path / 'out')!r})"
    result = _run(wheel_env, tmp_path, "exec", call)
    assert result.returncode == 0, result.stderr[-3000:]
    _same_outputs(tmp_path / "out", reference)


def test_command_line_from_another_working_directory(wheel_env, unpacked, reference, t1_crop, tmp_path):
    config = unpacked / "configs" / "inference.json"
    args = ["--config_file", str(config), "--datalist", _datalist(t1_crop), "--output_dir", str(tmp_path / "out")]
    result = _run(wheel_env, tmp_path / "elsewhere", "module", "monai.bundle", "run", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    _same_outputs(tmp_path / "out", reference)


def test_the_guard_catches_a_read_of_the_checkout(wheel_env, tmp_path):
    result = _run(wheel_env, tmp_path, "exec", f"open({str(REPO / 'README.md')!r}).read()")
    assert result.returncode == 3 and "CHECKOUT FILES READ" in result.stderr
