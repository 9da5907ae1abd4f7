import pytest
from monai.data import Dataset

from neurobundles.data import PrefetchDataLoader
from neurobundles.errors import InvalidImageError


def _load(item: dict) -> dict:
    if item["id"] == 3:
        raise InvalidImageError("subject3.nii.gz: every voxel equals 0")
    return {"id": item["id"], "value": item["id"] * 10}


def test_batches_come_in_order():
    loader = PrefetchDataLoader(
        Dataset([{"id": i} for i in range(6)], transform=lambda d: {"value": d["id"]}), batch_size=2
    )
    assert [batch["value"].tolist() for batch in loader] == [[0, 1], [2, 3], [4, 5]]


def test_an_error_in_the_background_stops_the_run_at_that_item():
    loader = PrefetchDataLoader(Dataset([{"id": i} for i in range(6)], transform=_load), batch_size=1)
    seen = []
    with pytest.raises(RuntimeError, match="applying transform") as caught:  # MONAI's wrapping, as without prefetch
        for batch in loader:
            seen.append(int(batch["id"]))
    assert isinstance(caught.value.__cause__, InvalidImageError) and "subject3.nii.gz" in str(caught.value.__cause__)
    assert seen == [0, 1, 2]


def test_leaving_early_does_not_hang():
    loader = PrefetchDataLoader(Dataset([{"id": i} for i in range(50)], transform=lambda d: d), batch_size=1)
    for index, _ in enumerate(loader):
        if index == 2:
            break
    assert [int(b["id"]) for b in loader][:3] == [0, 1, 2]
