"""Command line: ``neurobundles segment | list | demo | check | export | package | compare`` (thin; the bundles do
the work)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import fire

from neurobundles import zoo
from neurobundles.atomic import check_writable_location
from neurobundles.data import mtneuro as mtneuro_data
from neurobundles.engines import CohortFailedError
from neurobundles.errors import InvalidImageError, OutputNotWritableError, WeightsUnavailableError
from neurobundles.outputs import FAILURES, check_output_ext, read_failures
from neurobundles.plausibility import MAX_VOXEL_MM
from neurobundles.tools import compare as compare_tool
from neurobundles.tools import mtneuro_benchmark as mtneuro_tool
from neurobundles.zoo import conformance, packaging

__all__ = ["main", "segment"]

DEFAULT_BUNDLE = "meshnet_hcp_tissue"
SLIDING_WINDOW = {"_target_": "SlidingWindowInferer", "roi_size": [192, 192, 192], "overlap": 0.25, "mode": "gaussian"}
"""Windows of 192³ keep 99.9 % of the whole-volume labels on t1_crop (128³ windows: 73 % inside the brain),
because MeshNet's receptive field is 93 voxels wide and window borders see zero padding."""
_USER_ERRORS = (InvalidImageError, OutputNotWritableError, WeightsUnavailableError, FileNotFoundError, ValueError)


class UserError(Exception):
    """A problem with the user's input or setup, printed without a traceback."""


class InputsFailedError(UserError):
    """Some inputs could not be segmented; the others were (``datalist`` is the whole run)."""

    def __init__(self, message: str, datalist: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.datalist = datalist


def _user_error(error: BaseException) -> BaseException | None:
    """The first actionable error in an exception chain (MONAI wraps errors raised inside transforms)."""
    seen = error
    while seen is not None:
        if isinstance(seen, (InvalidImageError, OutputNotWritableError, WeightsUnavailableError, CohortFailedError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def bundle_datalist(bundle: Path, inputs: list[str], recursive: bool, output_dir: Path) -> list[dict]:
    """The bundle's own reading of the inputs: its ``datalist`` with ``dataset_dir`` set to them.

    Each bundle knows what an input is (a T1; a T1/T2 subject; a BraTS case folder...); the command line only
    hands the files, folders and patterns over, and so checks them all before any work.
    """
    if not inputs:
        raise ValueError("no input given: pass image files, folders or glob patterns.")
    override = {"dataset_dir": inputs, "recursive": recursive, "output_dir": str(output_dir)}
    try:
        return list(zoo.bundle_parser(bundle, "inference", **override).get_parsed_content("datalist"))
    except RuntimeError as error:  # MONAI wraps what the config's expression raised
        cause = error.__cause__
        while cause is not None and not isinstance(cause, _USER_ERRORS):
            cause = cause.__cause__
        raise cause or error from error


def segment(
    inputs: Sequence[str],
    bundle: str = DEFAULT_BUNDLE,
    output: str = "segmentations",
    recursive: bool = False,
    device: str | None = None,
    sliding_window: bool = False,
    ext: str = ".nii.gz",
    brain_crop: bool = False,
    overwrite: bool = False,
    nproc: int = 1,
    max_voxel_mm: float | None = MAX_VOXEL_MM,
    precision: str | None = None,
) -> list[dict[str, str]]:
    """Segment images with a bundle; returns the datalist. Everything the user gave is checked before any work;
    inputs that fail are recorded and skipped (:class:`UserError` at the end says how many)."""
    if sliding_window and brain_crop:
        raise UserError("choose one of --sliding_window and --brain_crop.")
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}.")
    try:
        output_ext = check_output_ext(ext)
        root = zoo.bundle_path(bundle)
        output_dir = check_writable_location(output)
        datalist = bundle_datalist(root, list(inputs), recursive, output_dir)
    except _USER_ERRORS as error:
        raise UserError(str(error)) from error
    override: dict = {"datalist": datalist, "output_dir": str(output_dir), "output_ext": output_ext}
    override |= {"overwrite": overwrite, "max_voxel_mm": max_voxel_mm}
    if device:
        override["device"] = f"$torch.device({device!r})"
    if sliding_window:
        override["inferer"] = SLIDING_WINDOW
    if brain_crop:
        override["inferer"] = "@brain_crop_inferer"
    if precision:
        override["precision"] = precision
    try:
        if nproc > 1:
            zoo.run_workflow_processes(root, ["inference", "multi_gpu_inference"], nproc, **override)
        else:
            zoo.run_workflow(root, "inference", **override)
    except Exception as error:
        actionable = _user_error(error)
        if isinstance(actionable, CohortFailedError):
            raise InputsFailedError(str(actionable), datalist) from error
        if actionable is not None:
            raise UserError(str(actionable)) from error
        if nproc > 1 and read_failures(output_dir):  # the processes' own errors were logged by them
            failed = len(read_failures(output_dir))
            raise InputsFailedError(f"{failed} input(s) failed: see {output_dir / FAILURES}.", datalist) from error
        raise
    return datalist


def _print_volumes(output: Path, datalist: list[dict[str, str]], limit: int = 20) -> None:
    """The volumes of each input segmented (from its table), at most 20 structures each."""
    for item in datalist:
        table = output / f"{item['id']}_volumes.csv"
        if not table.is_file():
            continue
        with table.open() as stream:
            rows = list(csv.DictReader(stream))
        structures = [row for row in rows if row["label"]]
        total = next(row for row in rows if not row["label"])
        print(f"\n{item['image']}  →  {output / (item['id'] + '_seg')}*")
        for row in structures if len(structures) <= limit else []:
            print(f"  {row['name']:<34} {float(row['volume_mm3']) / 1000:10.1f} cm³")
        if len(structures) > limit:
            print(f"  {len(structures)} structures: see {table}")
        print(f"  {total['name']:<34} {float(total['volume_mm3']) / 1000:10.1f} cm³")


class Commands:
    """neurobundles: brain MRI segmentation with MONAI bundles."""

    def segment(
        self,
        *inputs: str,
        bundle: str = DEFAULT_BUNDLE,
        output: str = "segmentations",
        recursive: bool = False,
        device: str | None = None,
        sliding_window: bool = False,
        ext: str = ".nii.gz",
        brain_crop: bool = False,
        overwrite: bool = False,
        nproc: int = 1,
        max_voxel_mm: float | None = MAX_VOXEL_MM,
        precision: str | None = None,
    ) -> None:
        """Segment T1 images (files, folders, glob patterns) into OUTPUT.

        Writes <name>_seg<ext> (labels in the input's grid), <name>_qc.png, <name>_volumes.csv (mm³ per label),
        <name>_summary.json (written last: the subject is complete), and for the run volumes.csv (every subject
        in OUTPUT), qc_sheet.png and, when inputs failed, failures.csv. Re-running skips complete subjects.
        File names starting with '-' work as inputs; after a bare '--' every argument is an input.

        Args:
            inputs: image files (.nii, .nii.gz, .mgz, .img), folders or quoted glob patterns.
            bundle: bundle name (see `neurobundles list`) or path to a bundle folder.
            output: output folder.
            recursive: also search sub-folders of folder inputs.
            device: torch device such as cpu or cuda:0 (default: cuda:0 when available).
            sliding_window: MONAI's SlidingWindowInferer (192³ windows: less memory, ~4× slower).
            ext: .nii.gz, .nii, .mgz or .mgh.
            brain_crop: run the brain-extraction bundle first and segment only the brain's bounding box.
            overwrite: segment every input again, even those whose outputs in OUTPUT are complete.
            nproc: processes sharing the inputs (one per GPU on a GPU machine; see docs/usage.md for torchrun).
            max_voxel_mm: refuse inputs whose voxels are coarser than this (mm); raise it to segment them anyway.
            precision: CPU path of the MeshNet bundles: auto (default: the fastest path whose labels were
                measured to agree with fp32 on ≥ 99.9 % of voxels), or fp32 to force exact fp32.
        """
        try:
            datalist = segment(
                inputs, bundle, output, recursive, device, sliding_window, ext, brain_crop, overwrite, nproc,
                max_voxel_mm, precision,
            )  # fmt: skip
        except InputsFailedError as failed:
            _print_volumes(Path(output), failed.datalist)
            raise
        _print_volumes(Path(output), datalist)

    def list(self) -> None:
        """List the bundles, their labels, and whether their weights are already cached."""
        for name in zoo.bundle_names():
            meta = zoo.load_metadata(name)
            root = zoo.bundle_path(name)
            files = zoo.bundle_remote_files(root)
            cached = all((root / path).is_file() or zoo.is_cached(remote) for path, remote in files.items())
            labels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
            if files:
                state = f"weights {'cached' if cached else 'not cached'}"
            else:  # trained by its user: configs/train.json writes models/model.pt
                state = "trained" if (root / "models" / "model.pt").is_file() else "no weights: train with train.json"
            print(f"{name}  (v{meta['version']}, {state})")
            print(f"  {meta['task']}")
            print(f"  labels: {', '.join(f'{k} {v}' for k, v in labels.items())}")

    def demo(self, output: str = "neurobundles_demo", bundle: str = DEFAULT_BUNDLE) -> None:
        """Fetch a real T1 MRI (brainchop's t1_crop.nii.gz), segment it, and print the volumes."""
        try:
            sample = zoo.fetch_sample("t1_crop")
        except WeightsUnavailableError as error:
            raise UserError(str(error)) from error
        self.segment(str(sample), bundle=bundle, output=output)

    def check(self, *names: str, full: bool = False) -> None:
        """Run the Model Zoo and MONAI Label conformance checks on bundles (default: all).

        Args:
            names: bundle names or folders.
            full: run the network at the input shape the metadata declares (as the Model Zoo's CI does),
                not at 32 voxels per edge; minutes per wide network on a CPU.
        """
        failed = []
        for name in names or zoo.bundle_names():
            for check, problem in conformance.check_bundle(name, full=full).items():
                print(f"{'FAIL' if problem else 'ok  '}  {name}  {check}" + (f": {problem}" if problem else ""))
                if problem:
                    failed.append(f"{name} {check}")
        if failed:
            raise UserError(f"{len(failed)} check(s) failed: {', '.join(failed)}.")

    def export(self, name: str, dest: str) -> None:
        """Write a self-contained copy of a bundle to DEST/NAME: weights fetched and verified, plus models/model.pt.

        This is the folder MONAI Label serves (DEST = <app>/model) and the content of a release zip.

        Args:
            name: bundle name or folder.
            dest: folder to write the copy into.
        """
        try:
            print(packaging.export_bundle(name, dest))
        except (WeightsUnavailableError, ValueError) as error:
            raise UserError(str(error)) from error

    def package(
        self,
        *names: str,
        output: str = "dist",
        repo: str | None = None,
        base_url: str | None = None,
        index: str | None = None,
    ) -> None:
        """Zip bundles as OUTPUT/NAME_v<version>.zip and record sha1 and URL in a model_info.json index.

        Args:
            names: bundle names or folders (default: all).
            output: release folder for the zips; the index defaults to OUTPUT/models/model_info.json.
            repo: OWNER/REPO/TAG of the GitHub release the zips will be uploaded to.
            base_url: or any URL the zips will be served from.
            index: model_info.json to update instead (the repository's models/model_info.json).
        """
        for name in names or zoo.bundle_names():
            try:
                print(packaging.package(name, output, repo=repo, base_url=base_url, index=index))
            except (WeightsUnavailableError, ValueError) as error:
                raise UserError(str(error)) from error

    def compare(
        self,
        dataset_dir: str,
        output: str = "compare",
        layout: str = "mindboggle",
        recipe: bool = False,
        device: str | None = None,
        **options: object,
    ) -> None:
        """Train MeshNet and the U-Net baseline on the same subjects and print them side by side.

        Parameters, checkpoint size, sub-volumes/s, seconds per full volume, training time and Dice per class;
        also written to OUTPUT/compare.json and OUTPUT/compare.csv. See neurobundles.tools.compare for every option.

        Args:
            dataset_dir: Mindboggle-101 folder (or a FreeSurfer subjects folder with --layout freesurfer).
            output: folder for checkpoints, logs and the tables.
            layout: mindboggle or freesurfer.
            recipe: the published recipe (1 mm, 128 sub-volumes per brain, 30 epochs, 512 at inference; a GPU job)
                instead of the small default budget (2 mm, 16 per brain, 2 epochs, 64 at inference).
            device: torch device, such as cpu or cuda:0.
            options: --valid, --test, --split_file, --max_epochs, --crops_per_volume, --volume_size, ...
        """
        try:
            results = compare_tool.compare(dataset_dir, output, layout, recipe=recipe, device=device, **options)
        except (FileNotFoundError, ValueError) as error:
            raise UserError(str(error)) from error
        print(compare_tool.format_table(results, tuple(options.get("bundle_names", compare_tool.BUNDLES))))

    def fetch_mtneuro(
        self, task: str = "task2_2D_4class", cache: str | None = None, splits: str = "train,val,test", retries: int = 5
    ) -> None:
        """Download an MTNeuro task's cutouts from BossDB (with intern) into a cache folder, for offline training.

        Each region's image and label cutout per split is fetched once, checked on reuse (SHA-256) and replaced if
        damaged. intern's server: ~/.intern/intern.cfg, else INTERN_PROTOCOL/INTERN_HOST/INTERN_TOKEN, else the
        public https://api.bossdb.io. Train offline from the copy with `--cache_dir DIR --offline true`.

        Args:
            task: a task the bundles ship (task2_2D_3class, task2_2D_4class, task2_3D_3class, task2_3D_4class) or
                the path of a task JSON file.
            cache: cache folder (default $NEUROBUNDLES_HOME/mtneuro).
            splits: comma-separated splits to fetch.
            retries: tries per request (with exponential backoff).
        """
        parts = splits if isinstance(splits, (list, tuple)) else str(splits).split(",")  # fire may give a tuple
        chosen = [str(part).strip() for part in parts if str(part).strip()]
        try:
            paths = mtneuro_data.prefetch(task, cache, splits=chosen, retries=retries)
        except (mtneuro_data.MTNeuroTaskError, mtneuro_data.MTNeuroUnavailableError, KeyError) as error:
            raise UserError(str(error).strip("'\"")) from error
        folder = Path(cache).expanduser() if cache else mtneuro_data.default_cache_dir()
        size = sum(path.stat().st_size for path in paths)
        print(f"{len(paths)} cutout(s) of {task} ({', '.join(chosen)}) in {folder} ({size / 2**20:.1f} MiB)")

    def mtneuro(self) -> mtneuro_tool.Commands:
        """MTNeuro Task 1 and Task 3: ``neurobundles mtneuro fetch | benchmark | readout``.

        fetch: the ROI settings' and Task 3 cutouts into the cache; benchmark: the multi-seed Task 1 table (mean ± std
        over seeds 1, 100, 350, 631, 872 beside the published values); readout: the Task 3 R² table and scatter
        plots. See ``neurobundles mtneuro benchmark --help`` and neurobundles.tools.mtneuro_benchmark.
        """
        return mtneuro_tool.Commands()


def _inputs_as_paths(argv: list[str]) -> list[str]:
    """Make ``segment``'s file names that start with '-' reach it as files, not options.

    Fire reads ``-x.nii.gz`` as a flag, so such a name that exists (or anything after a bare ``--``) is passed as
    ``./-x.nii.gz``.
    """
    if not argv or argv[0] != "segment":
        return argv
    out, only_inputs = [argv[0]], False
    for arg in argv[1:]:
        if arg == "--" and not only_inputs:
            only_inputs = True
            continue
        is_dashed_file = arg.startswith("-") and (only_inputs or (not arg.startswith("--") and Path(arg).exists()))
        out.append(f"./{arg}" if is_dashed_file and not Path(arg).is_absolute() else arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    command = _inputs_as_paths(list(argv) if argv is not None else sys.argv[1:])
    try:
        fire.Fire(Commands, command=command, name="neurobundles")
    except UserError as error:
        print(f"neurobundles: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
