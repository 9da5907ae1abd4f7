"""Load the next volume while the current one is segmented, without losing errors on the way.

MONAI's ``ThreadDataLoader`` overlaps loading with compute too, but an exception raised by a transform
in its thread ends the iteration silently, so a bad file would shorten a cohort run instead of stopping
it with the file's name. This loader hands exceptions over to the consumer and re-raises them there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Queue
from typing import Any

from monai.data import DataLoader

__all__ = ["PrefetchDataLoader"]

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class PrefetchDataLoader(DataLoader):
    """A MONAI :class:`~monai.data.DataLoader` that prepares up to ``prefetch`` batches in a background thread.

    Transforms release the GIL in their numpy/torch/nibabel work, so reading, conforming and normalising
    the next volume overlaps with the network. Errors are re-raised in the consuming thread, in order.

    Args:
        dataset: the dataset, as for ``DataLoader``.
        prefetch: batches prepared ahead (1 keeps memory to one extra volume).
        kwargs: passed to ``DataLoader`` (``batch_size``, ``num_workers``, ...).
    """

    def __init__(self, dataset: Any, prefetch: int = 1, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.prefetch = prefetch

    def __iter__(self) -> Iterator[Any]:
        queue: Queue = Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in super(PrefetchDataLoader, self).__iter__():
                    queue.put(batch)
                    if stop.is_set():
                        return
                queue.put(_DONE)
            except BaseException as error:  # handed to the consumer, which re-raises it
                queue.put(_Failure(error))

        thread = threading.Thread(target=produce, daemon=True, name="neurobundles-prefetch")
        thread.start()
        try:
            while (item := queue.get()) is not _DONE:
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
                while not queue.empty():
                    queue.get_nowait()
                thread.join(timeout=0.05)
