"""Starting MONAI Label for the round-trip tests: its command line, the sample app and a server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import pytest
import torch

from neurobundles.zoo import bundle_parser

STARTUP_TIMEOUT_S = 300


def monailabel(*args: str) -> list[str]:
    """``monailabel ARGS`` run by this interpreter (the venv MONAI Label is installed in)."""
    return [sys.executable, "-m", "monailabel.main", *args]


def download_app(root: Path) -> Path:
    """MONAI Label's ``monaibundle`` sample app, copied from the installed package (no network)."""
    subprocess.run(monailabel("apps", "--download", "--name", "monaibundle", "--output", str(root)), check=True)
    return root / "monaibundle"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(
    app: Path, studies: Path, models: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """``monailabel start_server`` serving ``models`` (comma-separated) of ``app`` over ``studies``, inference only;
    yields (URL, log file) once ``/info/`` answers, and stops the server afterwards."""
    port = _free_port()
    log = tmp_path_factory.mktemp("log") / "server.log"
    command = monailabel(
        "start_server", "--app", str(app), "--studies", str(studies),
        "--conf", "models", models,
        "--conf", "zoo_source", "github",  # the local bundles in <app>/model, never the zoo
        "--conf", "sam2", "false", "--conf", "skip_trainers", "true",
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    env = os.environ | {"MONAI_LABEL_SESSION_PATH": str(tmp_path_factory.mktemp("sessions"))}
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"monailabel exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/info/", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"monailabel did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
                time.sleep(0.5)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=60)


def infer(url: str, bundle: str, image: str, target: Path, params: dict | None = None) -> nib.Nifti1Image:
    """``POST /infer/<bundle>?image=<id>`` with ``params``; the label map it returns, saved as ``target``."""
    body = urllib.parse.urlencode({"params": json.dumps(params or {})}).encode()
    request = urllib.request.Request(f"{url}/infer/{bundle}?image={image}&output=image", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=600) as response:
        target.write_bytes(response.read())
    return nib.load(str(target))


def seeded_bundle(bundle_dir: Path, edit: Callable[[dict], None], seed: int = 0) -> Path:
    """An exported bundle made small for a round trip: ``edit`` changes its inference and train configs (one dict
    each, in place), and ``network_def``'s weights seeded with ``seed`` become ``models/model.pt`` (the seed
    bundles publish none)."""
    for name in ("inference", "train"):
        config_file = bundle_dir / "configs" / f"{name}.json"
        config = json.loads(config_file.read_text())
        edit(config)
        config_file.write_text(json.dumps(config, indent=4))
    torch.manual_seed(seed)
    network = bundle_parser(bundle_dir).get_parsed_content("network_def")
    (bundle_dir / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), bundle_dir / "models" / "model.pt")
    return bundle_dir
