"""MTNeuro (Quesada et al. 2022) X-ray microCT cutouts from BossDB: task definitions, download, cache, datasets.

**Tasks are data.** A task is a JSON file naming the image and label
channels (``bossdb://collection/experiment/channel``), the resolution, the regions with their ``x``/``y`` ranges,
the ``z`` range of each split, the tile size (``[x, y]``), 2D or 3D and the slices per sample, the class names and
``label_map`` (stored label value → class index: the 3-class tasks send axons, 3, to background, 0; the 4-class
tasks list no ZI region). Every range is half-open, ``[start, stop)``, as in ``intern`` and numpy slicing.
The published definitions ship with the bundles that train on them, in ``<bundle>/configs/tasks/``
(``mtneuro_task2_unet2d``: ``task2_2D_3class``, ``task2_2D_4class``; ``mtneuro_task2_unet3d``: ``task2_3D_3class``,
``task2_3D_4class``), and nowhere else: :func:`load_task` finds a task by name in the bundles folder
(``NEUROBUNDLES_BUNDLES``, else the checkout's ``bundles/``), or reads any task file given by path.

**Download.** Each region's cutout of each split is pulled with the real ``intern`` client
(``intern.array(uri)[z0:z1, y0:y1, x0:x1]``) in requests of at most 8 Mi voxels, each retried with exponential
backoff on connection errors, 5xx/429 answers and broken payloads. ``intern`` finds its server in
``~/.intern/intern.cfg``, else ``INTERN_PROTOCOL``/``INTERN_HOST``/``INTERN_TOKEN``, else the public
``https://api.bossdb.io`` with token ``public`` (it ignores a ``boss_config`` for ``bossdb://`` URIs, so none is
taken here).

**Cache.** ``<cache_dir>/<collection>/<experiment>/<channel>_x<x0>-<x1>_y<y0>-<y1>_z<z0>-<z1>_r<resolution>.npy``,
e.g. ``prasad/prasad2020/image_x4600-4856_y900-1156_z110-379_r0.npy``: the ``[z, y, x]`` array as ``intern``
returns it, except that label channels whose values fit are stored as ``uint8`` (the uint64 originals are 8×
larger). Beside it, ``<same name>.json`` records the URI, box, shape, dtype, source dtype and SHA-256. Files are
written atomically; on reuse the checksum, shape and dtype are checked, and a bad entry is fetched again (online)
or refused with the fix (offline). ``offline=True`` reads only the cache. The default cache is
``$NEUROBUNDLES_HOME/mtneuro``.

**Samples.** A region is cut into ``tile_size`` tiles (one per published region) and each split's slices into
windows of ``slices_per_sample``: ``ceil(n / depth)`` windows, disjoint except the last, which is moved back to end
on the split's last slice (it overlaps its neighbour; no window leaves its region or is short). For the published
tasks (train 269, val 29, test 50 slices): 2D 269/29/50 and 3D 34/4/7 samples per region, i.e. 1076/116/200 and
136/16/28 with four regions, 807/87/150 and 102/12/21 without ZI, the published counts. (MTNeuro's own loader makes
the same number of windows, but over the regions' concatenated slices: the last window of a region takes slices of
the next one, and the last region's is short.)

**Items.** ``{"image", "label", "id", "region", "z", "y", "x"}``: 2D ``image`` float32 ``[1, Y, X]`` in [0, 1]
(``uint8 / 255``) and ``label`` int64 ``[1, Y, X]``; 3D ``[1, Y, X, Z]`` for both, slices on the last axis as in
MONAI's ``(H, W, D)`` convention, so spatial axes 0 and 1 are in-plane for 2D and 3D alike and ``[..., k]`` of a 3D
item is the 2D item of slice ``z + k``. ``z``, ``y``, ``x`` give the sample's first voxel in the coordinate frame,
``id`` names the sample (``<region>_z<z>_y<y>_x<x>``, e.g. ``cortex_z0420_y900_x4600``) in reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from monai.data import Dataset
from monai.transforms import Compose, RandFlipd, RandRotate90d, apply_transform

from neurobundles.atomic import atomic_save, atomic_write_text
from neurobundles.paths import BUNDLES_ENV, bundles_dir
from neurobundles.paths import cache_dir as neurobundles_cache_dir

__all__ = [
    "SPLITS",
    "TASKS_FOLDER",
    "Cutout",
    "CutoutCache",
    "MTNeuroCacheError",
    "MTNeuroDataset",
    "MTNeuroTask",
    "MTNeuroTaskError",
    "MTNeuroUnavailableError",
    "Region",
    "Sample",
    "available_tasks",
    "default_cache_dir",
    "fetch_cutout",
    "intern_server",
    "load_task",
    "mtneuro_augmentation",
    "prefetch",
    "task_files",
    "window_starts",
]

logger = logging.getLogger("neurobundles.mtneuro")

SPLITS = ("train", "val", "test")
TASKS_FOLDER = Path("configs") / "tasks"
"""Where a bundle keeps the task definitions it trains on, relative to the bundle folder."""
MAX_REQUEST_VOXELS = 256 * 256 * 128
"""Largest cutout asked for in one request (8 Mi voxels, 64 MiB as uint64). Bigger cutouts go in equal slabs of
slices; ``intern`` would otherwise split them itself (above ~30 M voxels) and download the pieces with a
multiprocessing pool."""

T = TypeVar("T")


class MTNeuroTaskError(ValueError):
    """A task definition is malformed (the message names the file and the field)."""


class MTNeuroUnavailableError(FileNotFoundError):
    """A cutout is neither cached nor downloadable (offline, unreachable server, refused request)."""


class MTNeuroCacheError(ValueError):
    """A cached cutout is damaged and cannot be replaced (offline)."""


# ---------------------------------------------------------------------------------------------------------------
# Task definitions
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A named box of the coordinate frame (half-open ``x`` and ``y`` ranges)."""

    name: str
    x: tuple[int, int]
    y: tuple[int, int]


@dataclass(frozen=True)
class Sample:
    """One item: region, first slice ``z`` and the tile's corner ``y``, ``x`` in frame coordinates."""

    region: str
    z: int
    y: int
    x: int


@dataclass(frozen=True)
class Cutout:
    """A ``[z, y, x]`` box of one BossDB channel at one resolution."""

    uri: str
    x: tuple[int, int]
    y: tuple[int, int]
    z: tuple[int, int]
    resolution: int = 0

    @property
    def parts(self) -> tuple[str, str, str]:
        """``(collection, experiment, channel)`` of ``bossdb://collection/experiment/channel``."""
        return _parse_uri(self.uri)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z[1] - self.z[0], self.y[1] - self.y[0], self.x[1] - self.x[0])

    @property
    def filename(self) -> str:
        channel = self.parts[2]
        (x0, x1), (y0, y1), (z0, z1) = self.x, self.y, self.z
        return f"{channel}_x{x0}-{x1}_y{y0}-{y1}_z{z0}-{z1}_r{self.resolution}.npy"

    def describe(self) -> str:
        (x0, x1), (y0, y1), (z0, z1) = self.x, self.y, self.z
        return f"{self.uri} x {x0}:{x1} y {y0}:{y1} z {z0}:{z1} (resolution {self.resolution})"


def _parse_uri(uri: str) -> tuple[str, str, str]:
    prefix = "bossdb://"
    parts = uri[len(prefix) :].split("/") if uri.startswith(prefix) else []
    if len(parts) != 3 or not all(parts):
        raise MTNeuroTaskError(
            f"{uri!r} is not a BossDB channel URI of the form bossdb://collection/experiment/channel"
        )
    return parts[0], parts[1], parts[2]


def window_starts(start: int, stop: int, depth: int) -> list[int]:
    """First slices of the ``depth``-slice windows that cover ``[start, stop)`` without leaving it.

    ``ceil(n / depth)`` windows for ``n = stop - start`` slices: ``start, start + depth, ...`` and a last one that
    ends on ``stop - 1`` (overlapping its neighbour when ``depth`` does not divide ``n``).
    """
    count = stop - start
    if depth < 1:
        raise ValueError(f"a window needs at least one slice, got depth {depth}")
    if count < depth:
        raise ValueError(f"the range [{start}, {stop}) has {count} slices, fewer than one {depth}-slice window")
    windows = math.ceil(count / depth)
    return [start + i * depth for i in range(windows - 1)] + [stop - depth]


@dataclass(frozen=True)
class MTNeuroTask:
    """A task definition (see the module docstring for the JSON fields).

    Build it with :func:`load_task` from a name, a JSON file or a dictionary.
    """

    name: str
    image_uri: str
    label_uri: str
    resolution: int
    regions: tuple[Region, ...]
    z: Mapping[str, tuple[int, int]]
    tile_size: tuple[int, int]  # (x, y), as in MTNeuro's task files
    spatial_dims: int
    slices_per_sample: int
    classes: tuple[str, ...]
    label_map: Mapping[int, int]
    published_samples: Mapping[str, int]
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], source: str = "<dict>") -> MTNeuroTask:
        def field(name: str, kind: type | tuple[type, ...] = object) -> Any:
            if name not in spec:
                raise MTNeuroTaskError(f"{source}: the task has no {name!r} field.")
            value = spec[name]
            if not isinstance(value, kind):
                raise MTNeuroTaskError(f"{source}: {name!r} should be {_kind_name(kind)}, got {value!r}.")
            return value

        def pair(value: Any, where: str) -> tuple[int, int]:
            if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value)):
                raise MTNeuroTaskError(f"{source}: {where} should be [start, stop] integers, got {value!r}.")
            if not 0 <= value[0] < value[1]:
                raise MTNeuroTaskError(f"{source}: {where} [{value[0]}, {value[1]}) is empty or negative.")
            return int(value[0]), int(value[1])

        image, label = field("image", Mapping), field("label", Mapping)
        for name, channel in (("image", image), ("label", label)):
            try:
                _parse_uri(channel.get("uri", ""))
            except MTNeuroTaskError as error:
                raise MTNeuroTaskError(f"{source}: {name}.uri: {error}.") from None
        regions = tuple(
            Region(name, pair(box.get("x"), f"regions.{name}.x"), pair(box.get("y"), f"regions.{name}.y"))
            for name, box in field("regions", Mapping).items()
        )
        if not regions:
            raise MTNeuroTaskError(f"{source}: 'regions' is empty.")
        z = {split: pair(value, f"z.{split}") for split, value in field("z", Mapping).items()}
        tile = field("tile_size", Sequence)
        if len(tile) != 2 or not all(isinstance(t, int) and t > 0 for t in tile):
            raise MTNeuroTaskError(f"{source}: 'tile_size' should be two positive integers [x, y], got {tile!r}.")
        for region in regions:
            for axis, (lo, hi), size in (("x", region.x, tile[0]), ("y", region.y, tile[1])):
                if (hi - lo) % size:
                    raise MTNeuroTaskError(
                        f"{source}: region {region.name!r} is {hi - lo} voxels along {axis}, not a multiple of the "
                        f"tile size {size}."
                    )
        spatial_dims = field("spatial_dims", int)
        depth = field("slices_per_sample", int)
        if spatial_dims not in (2, 3) or (spatial_dims == 2 and depth != 1) or depth < 1:
            raise MTNeuroTaskError(
                f"{source}: spatial_dims {spatial_dims} with slices_per_sample {depth}; 2D tasks take 1 slice per "
                "sample, 3D tasks one or more."
            )
        classes = tuple(field("classes", Sequence))
        try:
            label_map = {int(k): int(v) for k, v in field("label_map", Mapping).items()}
        except ValueError as error:
            raise MTNeuroTaskError(f"{source}: 'label_map' keys and values must be integers ({error}).") from None
        if not label_map or min(label_map) < 0 or not all(0 <= v < len(classes) for v in label_map.values()):
            raise MTNeuroTaskError(
                f"{source}: 'label_map' must map non-negative stored values to class indices 0..{len(classes) - 1}."
            )
        task = cls(
            name=field("name", str),
            image_uri=image["uri"],
            label_uri=label["uri"],
            resolution=int(spec.get("resolution", 0)),
            regions=regions,
            z=z,
            tile_size=(int(tile[0]), int(tile[1])),
            spatial_dims=spatial_dims,
            slices_per_sample=depth,
            classes=classes,
            label_map=label_map,
            published_samples={k: int(v) for k, v in spec.get("published_samples", {}).items()},
            source=source,
        )
        for split, (lo, hi) in z.items():
            if hi - lo < depth:
                raise MTNeuroTaskError(f"{source}: z.{split} has {hi - lo} slices, fewer than {depth} per sample.")
        return task

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _z(self, split: str) -> tuple[int, int]:
        if split not in self.z:
            raise KeyError(f"{self.source}: task {self.name!r} has no split {split!r} (it has {sorted(self.z)}).")
        return self.z[split]

    def samples(self, split: str) -> list[Sample]:
        """Every sample of a split, region by region, then slice window, then tile (row-major)."""
        starts = window_starts(*self._z(split), self.slices_per_sample)
        tx, ty = self.tile_size
        return [
            Sample(region.name, z, y, x)
            for region in self.regions
            for z in starts
            for y in range(region.y[0], region.y[1], ty)
            for x in range(region.x[0], region.x[1], tx)
        ]

    def sample_count(self, split: str) -> int:
        return len(self.samples(split))

    def cutouts(self, split: str) -> list[tuple[Region, Cutout, Cutout]]:
        """``(region, image cutout, label cutout)`` for each region: the whole region over the split's slices."""
        z = self._z(split)
        return [
            (
                region,
                Cutout(self.image_uri, region.x, region.y, z, self.resolution),
                Cutout(self.label_uri, region.x, region.y, z, self.resolution),
            )
            for region in self.regions
        ]

    def label_lut(self) -> np.ndarray:
        """Stored label value → class index (int64); -1 for values the task does not define."""
        lut = np.full(max(self.label_map) + 1, -1, np.int64)
        for value, index in self.label_map.items():
            lut[value] = index
        return lut


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {Mapping: "an object", Sequence: "a list", str: "a string", int: "an integer"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def task_files(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Task name → JSON file of every task definition the bundles ship (``<bundle>/configs/tasks/*.json``).

    Args:
        root: the folder of bundles (default ``NEUROBUNDLES_BUNDLES``, else the checkout's ``bundles/``).

    Raises:
        MTNeuroTaskError: two bundles ship different definitions under one name.
    """
    folder = Path(root) if root is not None else bundles_dir()
    found: dict[str, Path] = {}
    if folder is None or not folder.is_dir():
        return found
    for path in sorted(folder.glob(f"*/{TASKS_FOLDER.as_posix()}/*.json")):
        other = found.setdefault(path.stem, path)
        if other != path and other.read_bytes() != path.read_bytes():
            raise MTNeuroTaskError(
                f"two bundles define task {path.stem!r} differently: {other} and {path}; a task has one source, "
                "so rename one of them."
            )
    return found


def available_tasks() -> list[str]:
    """Names of the task definitions the bundles ship (see :func:`task_files`)."""
    return sorted(task_files())


def load_task(task: str | os.PathLike | Mapping[str, Any] | MTNeuroTask) -> MTNeuroTask:
    """A task from its name (``"task2_2D_3class"``, looked up with :func:`task_files`), a JSON file, a dictionary,
    or an :class:`MTNeuroTask`."""
    if isinstance(task, MTNeuroTask):
        return task
    if isinstance(task, Mapping):
        return MTNeuroTask.from_dict(task)
    path = Path(task)
    if path.suffix != ".json" and not path.exists():
        files = task_files()
        if str(task) not in files:
            where = bundles_dir()
            shipped = ", ".join(files) or f"none found (bundles folder: {where or 'not set'})"
            raise MTNeuroTaskError(
                f"No MTNeuro task named {str(task)!r}; the bundles ship {shipped}. Give the path of a task JSON "
                f"file, or point {BUNDLES_ENV} at a folder holding the MTNeuro bundles."
            )
        path = files[str(task)]
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise MTNeuroTaskError(f"{path}: task file not found.") from None
    except json.JSONDecodeError as error:
        raise MTNeuroTaskError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(spec, Mapping):
        raise MTNeuroTaskError(f"{path}: a task file holds one JSON object.")
    return MTNeuroTask.from_dict(spec, source=str(path))


# ---------------------------------------------------------------------------------------------------------------
# Download through intern
# ---------------------------------------------------------------------------------------------------------------
def intern_server() -> str:
    """Which BossDB server ``intern`` will use, and why (for messages)."""
    config = Path("~/.intern/intern.cfg").expanduser()
    if config.is_file():
        return f"the server configured in {config}"
    if all(k in os.environ for k in ("INTERN_PROTOCOL", "INTERN_HOST", "INTERN_TOKEN")):
        return f"{os.environ['INTERN_PROTOCOL']}://{os.environ['INTERN_HOST']} (from the INTERN_* variables)"
    return "https://api.bossdb.io with the public token (no ~/.intern/intern.cfg, no INTERN_* variables)"


def _prefetch_hint() -> str:
    return (
        "Pre-fetch the task on a machine that reaches BossDB with `neurobundles fetch-mtneuro --task TASK --cache "
        "DIR` (or `neurobundles.data.mtneuro.prefetch(TASK, DIR)`), copy DIR here and pass it as the cache folder."
    )


def _import_intern():
    try:
        import intern
    except ImportError as error:
        raise MTNeuroUnavailableError(
            f"MTNeuro data are downloaded with the `intern` client, which is not installed ({error}). Install it "
            "with `pip install intern==1.4.2`, or work offline from a pre-fetched cache."
        ) from error
    return intern


def _transient(error: BaseException) -> bool:
    """Worth another try: no connection, a timeout, a server-side (5xx) or rate-limit (429) answer, a broken payload."""
    import requests

    if isinstance(error, requests.HTTPError):
        status = error.response.status_code if error.response is not None else None
        return status is None or status >= 500 or status == 429
    if isinstance(error, requests.RequestException):
        return True
    try:
        import blosc

        if isinstance(error, blosc.blosc_extension.error):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(error, ValueError)  # a truncated payload fails to reshape


def _http_status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _with_retries(action: Callable[[], T], what: str, retries: int, backoff: float) -> T:
    """Run ``action``, up to ``retries`` times: after a transient failure wait ``backoff``, ``2·backoff``, ..."""
    for attempt in range(1, max(1, retries) + 1):
        try:
            return action()
        except Exception as error:
            status = _http_status(error)
            if not _transient(error):
                if status is None:
                    raise
                hint = {
                    401: "the token was refused: check INTERN_TOKEN or ~/.intern/intern.cfg",
                    403: "the token may not read this channel",
                    404: "the collection, experiment or channel does not exist on this server",
                }.get(status or 0, "the request was refused")
                raise MTNeuroUnavailableError(
                    f"{what} failed on {intern_server()}: HTTP {status} ({hint}). {error}"
                ) from error
            if attempt >= retries:
                raise MTNeuroUnavailableError(
                    f"{what} failed {attempt} time(s) on {intern_server()}; last error: {type(error).__name__}: "
                    f"{error}. Check the network and the server, or work offline: {_prefetch_hint()}"
                ) from error
            delay = backoff * 2 ** (attempt - 1)
            logger.warning("%s failed (%s: %s); try %d of %d in %.1f s", what, type(error).__name__, error,
                           attempt + 1, retries, delay)  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")


def fetch_cutout(
    cutout: Cutout, retries: int = 5, backoff: float = 1.0, max_request_voxels: int = MAX_REQUEST_VOXELS
) -> np.ndarray:
    """Download a cutout with ``intern.array`` as a ``[z, y, x]`` array in the channel's dtype.

    The box is checked against the channel's coordinate frame first, then fetched in slabs of at most
    ``max_request_voxels`` voxels, each retried separately.

    Args:
        cutout: channel URI, box and resolution.
        retries: tries per request (connection errors, 5xx/429 answers and broken payloads are retried).
        backoff: seconds before the second try; doubled before each further one.
        max_request_voxels: voxels per request.

    Raises:
        MTNeuroUnavailableError: the server cannot be reached after all tries, refuses the request, or the box
            lies outside the coordinate frame.
    """
    intern = _import_intern()
    (x0, x1), (y0, y1), (z0, z1) = cutout.x, cutout.y, cutout.z

    def open_channel() -> Any:
        with warnings.catch_warnings():  # intern's notice that it reads BossDB's own store, not CloudVolume
            warnings.filterwarnings("ignore", "CloudVolume is not installed", ImportWarning)
            return intern.array(cutout.uri, resolution=cutout.resolution)

    channel = _with_retries(open_channel, f"Opening {cutout.uri}", retries, backoff)
    frame = _with_retries(
        lambda: tuple(channel.shape), f"Reading the coordinate frame of {cutout.uri}", retries, backoff
    )
    for axis, (lo, hi), size in zip("zyx", (cutout.z, cutout.y, cutout.x), frame):
        if hi > size:
            raise MTNeuroUnavailableError(
                f"{cutout.describe()}: {axis} {lo}:{hi} lies outside the channel's coordinate frame (0:{size})."
            )
    out = np.empty(cutout.shape, dtype=np.dtype(channel.dtype))
    slabs = math.ceil((z1 - z0) * (y1 - y0) * (x1 - x0) / max_request_voxels)
    step = math.ceil((z1 - z0) / slabs)
    for start in range(z0, z1, step):
        stop = min(start + step, z1)

        def get(start: int = start, stop: int = stop) -> np.ndarray:
            return np.asarray(channel[start:stop, y0:y1, x0:x1]).reshape(stop - start, y1 - y0, x1 - x0)

        out[start - z0 : stop - z0] = _with_retries(get, f"Downloading {cutout.describe()} z {start}:{stop}",
                                                    retries, backoff)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$NEUROBUNDLES_HOME/mtneuro`` (``~/.cache/neurobundles/mtneuro``)."""
    return neurobundles_cache_dir() / "mtneuro"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _compact(data: np.ndarray) -> np.ndarray:
    """Integer labels that fit in uint8 are kept as uint8 (the uint64 BossDB annotations are 8× larger)."""
    if data.dtype.kind in "ui" and data.dtype.itemsize > 1 and data.size and data.min() >= 0 and data.max() < 256:
        return data.astype(np.uint8)
    return data


class CutoutCache:
    """Cutouts as ``.npy`` files with a checksum sidecar; downloads what is missing unless offline.

    Args:
        root: cache folder (default :func:`default_cache_dir`).
        offline: read only the cache; a missing or damaged file raises with the way to pre-fetch it.
        retries: tries per download request.
        backoff: seconds before the second try, doubled each time.
        verify: check each file's SHA-256 against its sidecar on reuse (shape and dtype are always checked).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        offline: bool = False,
        retries: int = 5,
        backoff: float = 1.0,
        verify: bool = True,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.offline, self.retries, self.backoff, self.verify = offline, retries, backoff, verify

    def path(self, cutout: Cutout) -> Path:
        collection, experiment, _ = cutout.parts
        return self.root / collection / experiment / cutout.filename

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_suffix(".json")

    def problem(self, cutout: Cutout) -> str | None:
        """Why the cached file of ``cutout`` cannot be used (``"missing"`` when absent), or ``None``."""
        path = self.path(cutout)
        side = self.sidecar(path)
        if not path.is_file() and not side.is_file():
            return "missing"
        if not path.is_file():
            return f"the data file is missing (only its record {side.name} is there)"
        if not side.is_file():
            return f"its record {side.name} is missing (an interrupted download?)"
        try:
            record = json.loads(side.read_text())
            expected = (record["uri"], list(record["x"]), list(record["y"]), list(record["z"]), record["resolution"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            return f"its record {side.name} is unreadable ({type(error).__name__}: {error})"
        if expected != (cutout.uri, list(cutout.x), list(cutout.y), list(cutout.z), cutout.resolution):
            return f"its record {side.name} describes another cutout"
        if self.verify and _sha256(path) != record.get("sha256"):
            return "its SHA-256 differs from the one recorded at download (the file changed or is incomplete)"
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as error:
            return f"it cannot be read as .npy ({type(error).__name__}: {error})"
        if data.shape != cutout.shape:
            return f"it holds an array of shape {data.shape}, not {cutout.shape}"
        if str(data.dtype) != record.get("dtype"):
            return f"it holds {data.dtype} data, its record says {record.get('dtype')}"
        return None

    def load(self, cutout: Cutout) -> np.ndarray:
        """The cutout as a read-only memory map, downloaded first if needed (and allowed)."""
        path = self.path(cutout)
        problem = self.problem(cutout)
        if problem is None:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if self.offline:
            if problem == "missing":
                raise MTNeuroUnavailableError(
                    f"{cutout.describe()} is not in the cache ({path}) and downloads are off (offline). "
                    f"{_prefetch_hint()}"
                )
            raise MTNeuroCacheError(
                f"{path}: {problem}. Delete it (and {self.sidecar(path).name}) and pre-fetch it again, or run once "
                f"online to replace it. {_prefetch_hint()}"
            )
        if problem != "missing":
            logger.warning("%s: %s; downloading it again", path, problem)
        self.store(cutout, fetch_cutout(cutout, self.retries, self.backoff))
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def store(self, cutout: Cutout, data: np.ndarray) -> Path:
        """Write ``data`` for ``cutout`` atomically, then its record (URI, box, shape, dtypes, SHA-256)."""
        if data.shape != cutout.shape:
            raise ValueError(f"{cutout.describe()}: got an array of shape {data.shape}, expected {cutout.shape}")
        path = self.path(cutout)
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = _compact(data)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as stream:
                np.save(stream, np.ascontiguousarray(stored), allow_pickle=False)

        self.sidecar(path).unlink(missing_ok=True)  # a data file without a record is never trusted
        atomic_save(path, save)
        record = {
            "uri": cutout.uri,
            "x": list(cutout.x),
            "y": list(cutout.y),
            "z": list(cutout.z),
            "resolution": cutout.resolution,
            "axes": "zyx",
            "shape": list(stored.shape),
            "dtype": str(stored.dtype),
            "source_dtype": str(data.dtype),
            "sha256": _sha256(path),
        }
        atomic_write_text(self.sidecar(path), json.dumps(record, indent=2) + "\n")
        logger.info("cached %s as %s", cutout.describe(), path)
        return path


def prefetch(
    task: str | os.PathLike | Mapping[str, Any] | MTNeuroTask,
    cache_dir: str | os.PathLike | None = None,
    splits: Iterable[str] = SPLITS,
    retries: int = 5,
    backoff: float = 1.0,
) -> list[Path]:
    """Download (or check) every cutout a task needs into ``cache_dir``; returns the ``.npy`` paths.

    Cutouts already cached and intact are not downloaded again; damaged ones are replaced. The four published
    Task 2 definitions share their cutouts (image and ``pixel_labels`` of each region and split), so one fetch of
    ``task2_2D_3class`` serves all four.
    """
    task = load_task(task)
    cache = CutoutCache(cache_dir, offline=False, retries=retries, backoff=backoff)
    paths = []
    for split in splits:
        for _, image, label in task.cutouts(split):
            for cutout in (image, label):
                cache.load(cutout)
                paths.append(cache.path(cutout))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Dataset and augmentation
# ---------------------------------------------------------------------------------------------------------------
class MTNeuroDataset(Dataset):
    """A split of an MTNeuro task as MONAI dictionary items (see the module docstring for shapes).

    The region cutouts are fetched into the cache when missing (unless ``offline``) and read through memory
    maps, so worker processes share them.

    Args:
        task: task name, JSON path, dictionary or :class:`MTNeuroTask`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        cache_dir: cache folder (default :func:`default_cache_dir`).
        transform: applied to each item dictionary (e.g. :func:`mtneuro_augmentation`).
        offline: read only the cache.
        retries: tries per download request.
        backoff: seconds before the second try, doubled each time.
        verify: check cached files' SHA-256 when opening them.
        sample_stride: keep every ``sample_stride``-th sample of the split (in :meth:`MTNeuroTask.samples` order),
            for quick runs; 1 keeps them all.
    """

    def __init__(
        self,
        task: str | os.PathLike | Mapping[str, Any] | MTNeuroTask,
        split: str = "train",
        cache_dir: str | os.PathLike | None = None,
        transform: Callable | None = None,
        offline: bool = False,
        retries: int = 5,
        backoff: float = 1.0,
        verify: bool = True,
        sample_stride: int = 1,
    ) -> None:
        if sample_stride < 1:
            raise ValueError(f"sample_stride must be at least 1, got {sample_stride}.")
        self.task = load_task(task)
        self.split = split
        cache = CutoutCache(cache_dir, offline=offline, retries=retries, backoff=backoff, verify=verify)
        self.lut = self.task.label_lut()
        self._files: dict[str, tuple[Path, Path]] = {}
        self._origin: dict[str, tuple[int, int, int]] = {}
        for region, image, label in self.task.cutouts(split):
            cache.load(image)
            labels = cache.load(label)
            self._check_labels(labels, cache.path(label))
            self._files[region.name] = (cache.path(image), cache.path(label))
            self._origin[region.name] = (image.z[0], image.y[0], image.x[0])
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        super().__init__(data=self.task.samples(split)[::sample_stride], transform=transform)

    def _check_labels(self, labels: np.ndarray, path: Path) -> None:
        top = int(labels.max()) if labels.size else 0
        unknown = [v for v in range(min(top, len(self.lut) - 1) + 1) if self.lut[v] < 0 and (labels == v).any()]
        if top >= len(self.lut) or unknown:
            values = unknown + ([top] if top >= len(self.lut) else [])
            raise MTNeuroTaskError(
                f"{path}: label values {values} are not in the task's label_map {dict(self.task.label_map)} "
                f"({self.task.source}); add them to the map."
            )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # worker processes open their own memory maps
        return state

    def _open(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._arrays is None:
            self._arrays = {
                name: (np.load(image, mmap_mode="r"), np.load(label, mmap_mode="r"))
                for name, (image, label) in self._files.items()
            }
        return self._arrays

    def read(self, sample: Sample) -> dict[str, Any]:
        """The untransformed item of one sample."""
        image, label = self._open()[sample.region]
        z0, y0, x0 = self._origin[sample.region]
        tx, ty = self.task.tile_size
        window = (
            slice(sample.z - z0, sample.z - z0 + self.task.slices_per_sample),
            slice(sample.y - y0, sample.y - y0 + ty),
            slice(sample.x - x0, sample.x - x0 + tx),
        )
        pixels = np.divide(image[window], 255.0, dtype=np.float32)  # [d, y, x]
        classes = self.lut[label[window]]
        if self.task.spatial_dims == 2:
            pixels, classes = pixels[0], classes[0]
        else:
            pixels, classes = np.moveaxis(pixels, 0, -1), np.moveaxis(classes, 0, -1)
        return {
            "image": np.ascontiguousarray(pixels[None]),
            "label": np.ascontiguousarray(classes[None]),
            "id": f"{sample.region}_z{sample.z:04d}_y{sample.y}_x{sample.x}",
            "region": sample.region,
            "z": sample.z,
            "y": sample.y,
            "x": sample.x,
        }

    def _transform(self, index: int) -> Any:
        item = self.read(self.data[index])
        return apply_transform(self.transform, item) if self.transform is not None else item


def mtneuro_augmentation(
    keys: Sequence[str] = ("image", "label"), prob: float = 0.5, allow_missing_keys: bool = False
) -> Compose:
    """Random flips of both in-plane axes and rotations by multiples of 90°, applied alike to every key.

    A dictionary transform draws its randomness once per call and applies it to all ``keys``, so image and mask
    stay aligned (MTNeuro's loader drew separate flips and rotations for the image and the mask). Rotations are
    restricted to the exact quarter turns: they need no interpolation, so labels stay labels. Spatial axes 0 and 1
    are the in-plane axes of both the 2D ``[1, Y, X]`` and 3D ``[1, Y, X, Z]`` items.

    Args:
        keys: the keys to transform together.
        prob: probability of each of the three transforms.
        allow_missing_keys: skip absent keys instead of failing.
    """
    keys = list(keys)
    return Compose(
        [
            RandFlipd(keys, prob=prob, spatial_axis=0, allow_missing_keys=allow_missing_keys),
            RandFlipd(keys, prob=prob, spatial_axis=1, allow_missing_keys=allow_missing_keys),
            RandRotate90d(keys, prob=prob, max_k=3, spatial_axes=(0, 1), allow_missing_keys=allow_missing_keys),
        ]
    )
