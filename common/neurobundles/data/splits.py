"""Train/validation/test splits by subject: a seeded shuffle, or explicit lists of subject ids."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.data import partition_dataset

from neurobundles.atomic import atomic_write_text
from neurobundles.errors import reported

__all__ = ["SPLITS", "held_out", "save_split", "split_datalist"]

SPLITS = ("train", "valid", "test")


def _count(size: float, total: int, name: str) -> int:
    """A split size given as a fraction of ``total`` (at least one subject when non-zero) or as a count."""
    if isinstance(size, bool) or size < 0:
        raise ValueError(f"{name} must be a fraction in [0, 1) or a number of subjects, got {size!r}.")
    if isinstance(size, int) or size >= 1:
        if size != int(size):
            raise ValueError(f"{name}: a split of {size} subjects is not a whole number.")
        return int(size)
    return max(1, round(size * total)) if size > 0 else 0


def _explicit(items: dict[str, dict], lists: Mapping[str, Sequence[str]] | str | Path) -> dict[str, list[dict]]:
    source = str(lists)
    if isinstance(lists, (str, Path)):
        if not Path(lists).is_file():
            raise FileNotFoundError(
                f"{lists}: split file not found; train.json writes split.json beside the checkpoint it saves, "
                "or pass valid/test sizes and a seed instead."
            )
        lists = json.loads(Path(lists).read_text())
    unknown_splits = sorted(set(lists) - set(SPLITS))
    if unknown_splits:
        raise ValueError(f"{source}: unknown split(s) {', '.join(unknown_splits)}; use {', '.join(SPLITS)}.")
    named = [ident for split in SPLITS for ident in lists.get(split, [])]
    twice = sorted(ident for ident, count in Counter(named).items() if count > 1)
    if twice:
        raise ValueError(f"{source}: subject(s) {', '.join(twice)} listed in more than one split (or twice).")
    missing = sorted(set(named) - set(items))
    if missing:
        raise ValueError(f"{source}: subject(s) {', '.join(missing)} not in the dataset ({len(items)} subjects).")
    return {split: [items[ident] for ident in lists.get(split, [])] for split in SPLITS}


@reported
def split_datalist(
    datalist: Sequence[dict],
    valid: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    lists: Mapping[str, Sequence[str]] | str | Path | None = None,
) -> dict[str, list[dict]]:
    """``{"train": [...], "valid": [...], "test": [...]}`` of a datalist whose items carry an ``"id"``.

    The same subjects, seed and sizes always give the same split, whatever order the subjects were
    found in: MONAI's ``partition_dataset`` shuffles the sorted ids with ``seed`` and cuts them by the
    sizes. ``lists`` (a mapping or a JSON file ``{"train": [ids], "valid": [ids], "test": [ids]}``)
    fixes the split instead; splits it leaves out are empty.

    Args:
        datalist: items with a unique ``"id"`` (as the dataset adapters write).
        valid: validation size, a fraction of the subjects (at least one when non-zero) or a count.
        test: test size, likewise.
        seed: seed of the shuffle.
        lists: explicit subject ids per split.
    """
    ids = [str(item["id"]) for item in datalist]
    repeated = sorted(ident for ident, count in Counter(ids).items() if count > 1)
    if repeated:
        raise ValueError(f"subject id(s) {', '.join(repeated)} occur more than once; ids must be unique to split.")
    items = dict(sorted(zip(ids, datalist)))
    if lists is not None:
        return _explicit(items, lists)
    n_valid, n_test = _count(valid, len(items), "valid"), _count(test, len(items), "test")
    if n_valid + n_test >= len(items):
        raise ValueError(
            f"{len(items)} subject(s): {n_valid} for validation and {n_test} for testing leave none for training; "
            "pass smaller valid/test sizes or explicit lists."
        )
    valid_items, test_items, train_items = partition_dataset(
        list(items), ratios=[n_valid, n_test, len(items) - n_valid - n_test], shuffle=True, seed=seed
    )
    chosen = {"train": train_items, "valid": valid_items, "test": test_items}
    return {split: [items[name] for name in sorted(chosen[split])] for split in SPLITS}


def save_split(split: Mapping[str, Sequence[dict]], path: str | Path) -> Mapping[str, Sequence[dict]]:
    """Write the subject ids of each split to ``path`` (JSON, atomically) and return ``split`` unchanged.

    Training configs save the split beside the checkpoint, so evaluation can test on exactly the held-out
    subjects (``split_datalist(..., lists=path)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = {name: [str(item["id"]) for item in split.get(name, [])] for name in SPLITS}
    atomic_write_text(path, json.dumps(ids, indent=2) + "\n")
    return split


def held_out(datalist: Sequence[dict], split_file: str | Path) -> list[dict]:
    """The test subjects of ``split_file`` when it exists (a model trained with that split), else every subject.

    Evaluation configs score a model trained by ``train.json`` on the subjects it never saw, and published
    weights on the whole dataset.
    """
    if not Path(split_file).is_file():
        return list(datalist)
    return split_datalist(datalist, lists=split_file)["test"]
