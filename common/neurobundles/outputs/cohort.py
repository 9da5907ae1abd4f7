"""The cohort's tables: ``volumes.csv`` (subjects × structures, mm³) and ``failures.csv`` (inputs that failed).

The volume table is built from every subject summary in the output folder, not from one run's memory, so
re-running into a folder, adding subjects, resuming an interrupted run or merging the ranks of a
multi-process run never drops a subject.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .volumes import TOTAL_BRAIN

__all__ = ["FAILURES", "VOLUMES", "cohort_table", "failures_table", "read_failures"]

VOLUMES = "volumes.csv"
FAILURES = "failures.csv"
_FAILURE_FIELDS = ("id", "image", "reason")


def cohort_table(summaries: Sequence[Mapping]) -> str:
    """``id, EstimatedTotalBrainVolume, <structures...>, warnings`` with one row per subject summary."""
    columns = list(dict.fromkeys(name for summary in summaries for name in summary.get("volumes_mm3", {})))
    columns.sort(key=lambda name: name != TOTAL_BRAIN)  # the total first, then structures in table order
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", *columns, "warnings"])
    for summary in sorted(summaries, key=lambda s: str(s["id"])):
        volumes = summary.get("volumes_mm3", {})
        writer.writerow(
            [summary["id"], *(volumes.get(c, "") for c in columns), " | ".join(summary.get("warnings", []))]
        )
    return buffer.getvalue()


def failures_table(failures: Iterable[Mapping]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_FAILURE_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(sorted(failures, key=lambda f: str(f["id"])))
    return buffer.getvalue()


def read_failures(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / FAILURES
    if not path.is_file():
        return []
    with path.open() as stream:
        return list(csv.DictReader(stream))
