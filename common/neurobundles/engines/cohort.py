"""Cohort runs that never lose a scan: failures isolated, runs resumable, shards across processes and nodes.

A bundle's ``inference.json`` wires three pieces:

- :class:`Cohort` (config id ``cohort``) decides what to segment: this process's shard of the datalist
  (every subject belongs to exactly one rank under ``torchrun``), minus subjects whose outputs are complete
  (unless ``overwrite``), minus inputs whose header already shows they cannot be segmented (recorded as
  failures, with a clear ``neurobundles: error:`` line, before any inference). It removes the temporary
  files of a killed run, keeps the cohort table current, and at the end (``finish``) writes ``failures.csv``,
  rebuilds ``volumes.csv`` from every subject in the folder and draws the QC contact sheets.
- :class:`CohortDataset` turns a subject whose loading or preprocessing fails into a failure record.
- :class:`CohortEvaluator` skips those records and records a subject whose inference or post-processing
  fails, then goes on with the next one. Problems with the output folder (full disk, no permission) still
  end the run: every later subject would fail the same way.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from monai.data import Dataset
from monai.engines import SupervisedEvaluator

from neurobundles.atomic import atomic_write_text, check_writable_location
from neurobundles.errors import InvalidImageError, OutputNotWritableError, reported
from neurobundles.outputs import (
    FAILURES,
    SUMMARY_SUFFIX,
    VOLUMES,
    clean_stale_temporaries,
    cohort_table,
    failures_table,
    is_complete,
    read_summaries,
    safe_id,
    write_contact_sheets,
)
from neurobundles.plausibility import MAX_VOXEL_MM
from neurobundles.transforms.io import check_image_file

__all__ = ["FAILURE_KEY", "Cohort", "CohortDataset", "CohortEvaluator", "CohortFailedError", "init_distributed"]

logger = logging.getLogger("neurobundles.cohort")

FAILURE_KEY = "failure"
"""Key of a failure record: ``{"image": path, "id": name, "failure": reason}``."""

_TABLE_INTERVAL_S = 30.0
MAX_SHEET_SUBJECTS = 2000
"""Contact sheets cover at most this many subjects (100 pages); every subject keeps its own QC picture."""


class CohortFailedError(RuntimeError):
    """Some inputs of a cohort run failed; the others were segmented. The message says how many and where."""


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(timeout_hours: float = 24.0) -> torch.device:
    """Join the ``torchrun`` process group (NCCL on GPUs, gloo on CPU) and return this process's device.

    The long timeout lets ranks that finish early wait at the end for ranks with more (or larger) scans.
    """
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=timeout_hours))
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def _reason(error: BaseException) -> str:
    """The most specific message in an exception chain (MONAI wraps errors raised inside transforms)."""
    chain, seen = [], error
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    named = [e for e in chain if type(e).__module__.startswith("neurobundles")]
    chosen = named[-1] if named else chain[-1]
    text = str(chosen).strip().splitlines()[0] if str(chosen).strip() else ""
    return text if named else f"{type(chosen).__name__}: {text}".strip(": ")


def _is_fatal(error: BaseException) -> bool:
    """Errors that end the run rather than one subject: the output folder, memory, interruption."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (OutputNotWritableError, MemoryError, KeyboardInterrupt, SystemExit)):
            return True
        seen = seen.__cause__
    return False


class Cohort:
    """The subjects of a run and its bookkeeping (see the module docstring).

    Args:
        datalist: ``[{"image": path, "id": name}, ...]``.
        output_dir: the output folder.
        overwrite: segment every subject again, even those whose outputs are complete.
        check_inputs: read each input's header before any inference and set aside those that cannot work.
        max_voxel_mm: refuse inputs with a voxel edge longer than this (None: no limit); passed to the checks.
        contact_sheets: draw ``qc_sheet*.png`` from the subjects' QC pictures at the end.
        rank, world_size: this process's shard (default: from ``torch.distributed`` when initialised).
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[str, Any]],
        output_dir: str | Path,
        overwrite: bool = False,
        check_inputs: bool = True,
        max_voxel_mm: float | None = MAX_VOXEL_MM,
        contact_sheets: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.datalist = [dict(item) for item in datalist]
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.check_inputs = check_inputs
        self.max_voxel_mm = max_voxel_mm
        self.contact_sheets = contact_sheets
        self._rank, self._world_size = rank, world_size
        self.failures: list[dict] = []
        self.segmented: list[str] = []
        self.skipped = 0
        self._pending: list[dict] | None = None
        self._created_output_dir = False
        self._last_table = 0.0

    @property
    def rank(self) -> int:
        return self._rank if self._rank is not None else _world()[0]

    @property
    def world_size(self) -> int:
        return self._world_size if self._world_size is not None else _world()[1]

    def shard(self) -> list[dict]:
        """This process's subjects: every ``world_size``-th of the datalist sorted by id, from ``rank``."""
        ordered = sorted(self.datalist, key=lambda item: str(item.get("id", item.get("image"))))
        return ordered[self.rank :: self.world_size]

    @reported
    def prepare(self) -> list[dict]:
        """Before any work: check the output location, clean a killed run's temporaries, choose the subjects."""
        check_writable_location(self.output_dir)
        if self.world_size > 1:
            if self.rank == 0:
                clean_stale_temporaries(self.output_dir)
            dist.barrier()  # no rank writes before the old temporaries are gone
        else:
            clean_stale_temporaries(self.output_dir)
        return self.pending()

    def pending(self) -> list[dict]:
        """The subjects this process will segment (computed once)."""
        if self._pending is not None:
            return self._pending
        shard = self.shard()
        todo = []
        for item in shard:
            ident = str(item.get("id", ""))
            try:
                safe_id(ident)
            except ValueError as error:
                self.record_failure(item, str(error))
                continue
            if not self.overwrite and is_complete(self.output_dir, ident, item["image"]):
                self.skipped += 1
                continue
            todo.append(item)
        if self.check_inputs:
            todo = [item for item in todo if self._readable(item)]
        if self.skipped:
            logger.info(
                "%d of %d subject(s) already segmented in %s; skipping them (overwrite=True redoes them)",
                self.skipped,
                len(shard),
                self.output_dir,
            )
        self._created_output_dir = not self.output_dir.exists()
        self._pending = todo
        return todo

    def _readable(self, item: Mapping[str, Any]) -> bool:
        """The input's header shows it can be segmented; otherwise the failure is recorded, before any work."""
        images = item["image"] if isinstance(item["image"], (list, tuple)) else [item["image"]]
        try:
            for image in images:
                check_image_file(image, self.max_voxel_mm)
        except InvalidImageError as error:
            self.record_failure(item, str(error))
            return False
        return True

    def record_failure(self, item: Mapping[str, Any], reason: str) -> None:
        failure = {"id": str(item.get("id", "")), "image": str(item.get("image", "")), "reason": reason}
        self.failures.append(failure)
        logger.error(
            "neurobundles: error: %s", reason if failure["image"] in reason else f"{failure['image']}: {reason}"
        )

    def record_success(self, ident: str) -> None:
        """A subject's outputs are complete: keep the cohort table current (single process, at most every 30 s)."""
        self.segmented.append(ident)
        if self.world_size == 1 and time.monotonic() - self._last_table > _TABLE_INTERVAL_S:
            self._write_volumes()

    def _write_volumes(self) -> None:
        self._last_table = time.monotonic()
        summaries = read_summaries(self.output_dir)
        if summaries:
            atomic_write_text(self.output_dir / VOLUMES, cohort_table(summaries))

    def finish(self) -> dict[str, int]:
        """Gather the ranks' failures, write ``failures.csv``, rebuild ``volumes.csv`` and the contact sheets (on
        rank 0), log the summary; returns counts. Call :meth:`check` afterwards to fail the run on failures."""
        failures, segmented, skipped = self.failures, len(self.segmented), self.skipped
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, (self.failures, len(self.segmented), self.skipped))
            failures = [f for part in gathered for f in part[0]]
            segmented = sum(part[1] for part in gathered)
            skipped = sum(part[2] for part in gathered)
        self.totals = {"segmented": segmented, "skipped": skipped, "failed": len(failures)}
        if self.rank == 0:
            self._write_outputs(failures)
            logger.info(
                "cohort done: %d segmented, %d already complete, %d failed%s",
                segmented,
                skipped,
                len(failures),
                f" (see {self.output_dir / FAILURES})" if failures and self.output_dir.is_dir() else "",
            )
        self.all_failures = failures
        return self.totals

    def _write_outputs(self, failures: list[dict]) -> None:
        nothing_written = not self.output_dir.is_dir() or not any(self.output_dir.glob(f"*{SUMMARY_SUFFIX}"))
        if nothing_written and self._created_output_dir:
            if self.output_dir.is_dir() and not any(self.output_dir.iterdir()):
                self.output_dir.rmdir()  # a run that segmented nothing leaves no empty folder behind
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if failures:
            atomic_write_text(self.output_dir / FAILURES, failures_table(failures))
        else:
            (self.output_dir / FAILURES).unlink(missing_ok=True)
        self._write_volumes()
        if self.contact_sheets:
            pictures = sorted(p for p in self.output_dir.glob("*_qc.png") if not p.name.startswith("."))
            if len(pictures) > MAX_SHEET_SUBJECTS:
                logger.info("QC contact sheets show the first %d of %d subjects", MAX_SHEET_SUBJECTS, len(pictures))
            if pictures:
                write_contact_sheets(pictures[:MAX_SHEET_SUBJECTS], self.output_dir)

    def check(self) -> None:
        """Raise :class:`CohortFailedError` if any input of the run (any rank) failed."""
        failures = getattr(self, "all_failures", self.failures)
        if failures:
            where = self.output_dir / FAILURES if (self.output_dir / FAILURES).is_file() else "the log above"
            first = failures[0]
            detail = first["reason"] if first["image"] in first["reason"] else f"{first['image']}: {first['reason']}"
            raise CohortFailedError(
                f"{len(failures)} input(s) could not be segmented, the others were: {where} lists them with the "
                f"reasons (first: {detail})"
            )


class CohortDataset(Dataset):
    """MONAI's ``Dataset`` whose items never raise: a subject whose transforms fail becomes a failure record."""

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as error:
            if _is_fatal(error):
                raise
            item = self.data[index]
            return {"image": str(item.get("image", "")), "id": str(item.get("id", "")), FAILURE_KEY: _reason(error)}


def _failure_in(batch: Any) -> list[dict] | None:
    """Failure records in a collated batch (``batch_size`` 1 per subject in the bundles), or None."""
    if isinstance(batch, Mapping) and FAILURE_KEY in batch:
        values = batch[FAILURE_KEY]
        count = len(values) if isinstance(values, (list, tuple)) else 1
        pick = (lambda key, i: batch[key][i]) if isinstance(values, (list, tuple)) else (lambda key, _: batch[key])
        return [{key: str(pick(key, i)) for key in ("image", "id", FAILURE_KEY)} for i in range(count)]
    return None


class CohortEvaluator(SupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` over a :class:`Cohort`: one subject's failure does not stop the others.

    Args:
        cohort: the run's :class:`Cohort` (records successes and failures).
        args, kwargs: as for ``SupervisedEvaluator``.
    """

    def __init__(self, *args: Any, cohort: Cohort | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cohort = cohort

    def _iteration(self, engine: Any, batchdata: dict[str, Any]) -> Any:
        failures = _failure_in(batchdata)
        if failures is not None:
            for failure in failures:
                self._record(failure, failure[FAILURE_KEY])
            return [dict(failure) for failure in failures]
        try:
            output = super()._iteration(engine, batchdata)
        except Exception as error:
            if _is_fatal(error):
                raise
            items = _items(batchdata)
            for item in items:
                self._record(item, _reason(error))
            return [{**item, FAILURE_KEY: _reason(error)} for item in items]
        if self.cohort is not None:
            batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
            for item in batch:
                self.cohort.record_success(str(item.get("id", "")) if isinstance(item, Mapping) else "")
        return output

    def _record(self, item: Mapping[str, Any], reason: str) -> None:
        if self.cohort is not None:
            self.cohort.record_failure(item, reason)
        else:
            logger.error("neurobundles: error: %s: %s", item.get("image"), reason)


def _items(batch: Any) -> list[dict]:
    """``image``/``id`` of each subject in a collated batch, for failure records."""
    if not isinstance(batch, Mapping):
        return [{"image": "?", "id": "?"}]
    image = batch.get("image")
    sources = getattr(image, "meta", {}).get("filename_or_obj", image) if image is not None else "?"
    ids = batch.get("id", "?")
    sources = sources if isinstance(sources, (list, tuple)) else [sources]
    ids = ids if isinstance(ids, (list, tuple)) else [ids] * len(sources)
    return [{"image": str(s), "id": str(i)} for s, i in zip(sources, ids)]
