"""A loopback BossDB for tests: the part of the Boss API that ``intern.array`` uses, serving a synthetic brain.

``intern.array("bossdb://prasad/prasad2020/image")[z0:z1, y0:y1, x0:x1]`` makes these requests (intern 1.4.2,
``intern.remote.boss.BossRemote`` → ``intern.service.boss.v1``), all with ``Authorization: Token <token>``:

- ``GET /v1/collection/<collection>/experiment/<experiment>/channel/<channel>`` (twice: once to choose the
  volume provider from the channel's ``storage_type``, once for the array's channel resource);
- ``GET /v1/collection/<collection>/experiment/<experiment>`` and ``GET /v1/coord/<frame>`` when the array's
  ``shape`` is read (the data layer reads it to check a cutout lies inside the coordinate frame);
- ``GET /v1/cutout/<collection>/<experiment>/<channel>/<resolution>/<x0>:<x1>/<y0>:<y1>/<z0>:<z1>/`` (query
  ``access-mode=no-cache``) with ``Accept: application/blosc``; the body is the blosc-compressed C-order
  ``[z, y, x]`` array in the channel's ``datatype``;
- ``GET /v1/collection/<collection>`` is served too (``intern``'s ``Metadata`` and ``get_project`` use it).

``intern`` finds its server in ``~/.intern/intern.cfg``, else in ``INTERN_PROTOCOL``/``INTERN_HOST``/``INTERN_TOKEN``,
else the public server ``https://api.bossdb.io`` with token ``public``: tests point it here with
:func:`intern_environment`, which also gives it a ``HOME`` without ``~/.intern``.

The volume is generated lazily and deterministically per requested cutout (nothing large is stored): the
coordinate frame has the real extent (z 720, y 1420, x 5805 at 1.17 µm), the four densely annotated MTNeuro
cubes sit at their real coordinates, and any voxel has the same value whichever cutout it is requested in.
Content: background whose level and grain depend on the brain region, bright round cells (shaded towards their
rim), dark tubular vessels and thin dark myelinated-axon lines (none in cortex, bundled in striatum, dense in VP
and ZI). ``pixel_labels`` (0 background, 1 vessel, 2 cell, 3 axon) mark exactly the painted voxels inside the
annotated cubes (z 110–470) and are 0 elsewhere, as in the real data; ``roi_labels`` carry the xray-thc region ids
(1 cortex, 2 striatum, 3 TRN, 4 VP, 5 ZI, 6 internal capsule, 8 corpus callosum; 0 unlabelled) in bands along x
that contain every MTNeuro cube set (A–D), so a cube's most frequent id maps to its MTNeuro region
({0, 1} → CTX, {2, 8} → STR, {3, 4} → VP, {5, 6, 7} → ZI), for z 109–459 as in the published annotation.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "ANNOTATED_CUBES",
    "ANNOTATED_Z",
    "FRAME",
    "BossDBEmulator",
    "SyntheticBrain",
    "intern_environment",
    "task2_cache",
]

FRAME = {"x": (0, 5805), "y": (0, 1420), "z": (0, 720)}
"""The prasad2020 coordinate frame (xray-thc: 720 × 1420 × 5805 voxels, z × y × x)."""
VOXEL_UM = 1.17

ANNOTATED_CUBES = {
    "cortex": ((4600, 4856), (900, 1156)),
    "striatum": ((3700, 3956), (500, 756)),
    "vp": ((3063, 3319), (850, 1106)),
    "zi": ((1543, 1799), (650, 906)),
}
"""(x, y) ranges of the densely annotated MTNeuro cubes (Table A1, cube set A)."""
ANNOTATED_Z = (110, 470)
ROI_Z = (109, 460)  # the interpolated region annotation covers z 109–459

CHANNELS = {
    ("prasad", "prasad2020", "image"): ("image", "uint8"),
    ("prasad", "prasad_analysis", "pixel_labels"): ("annotation", "uint64"),
    ("prasad", "prasad_analysis", "roi_labels"): ("annotation", "uint64"),
}
COORD_FRAME = "prasad_coord_frame"


@dataclass(frozen=True)
class _Zone:
    """A brain region's band along x and the look of its tissue."""

    x_start: int
    roi: int
    background: float
    grain: float  # amplitude of the background texture
    cells: float  # mean cells per 64³ block
    cell_radius: tuple[int, int]
    vessels: float  # mean vessel segments per block
    axons: float  # mean axon segments per block
    bundled: bool  # axons gathered in fascicles (striatum) rather than spread
    axon_angle: float  # preferred in-plane direction of the axons, radians


# x bands: ZI < 2100 <= VP < 3330 <= striatum < 4340 <= cortex (every MTNeuro cube set lies inside its band)
ZONES = (
    _Zone(0, 5, 112.0, 8.0, 55.0, (2, 4), 2.2, 40.0, False, 0.3),
    _Zone(2100, 4, 104.0, 11.0, 38.0, (3, 5), 2.0, 55.0, False, 1.1),
    _Zone(3330, 2, 118.0, 9.0, 42.0, (3, 5), 1.6, 30.0, True, 2.2),
    _Zone(4340, 1, 128.0, 6.0, 40.0, (3, 5), 1.5, 0.0, False, 0.0),
)
# minority ids in bands at a zone's edge: (x0, x1, roi id)
ROI_BANDS = ((0, 700, 7), (2040, 2100, 6), (3270, 3330, 3), (4280, 4340, 8))

BLOCK = 64
_PERIOD = (37, 41, 43)
REACH = 32  # how far a block's vessels and axons may extend beyond the block
CELL, VESSEL, AXON = 2, 1, 3


def _ball(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets of a ball and their squared distance over radius², for shading."""
    r = int(radius)
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    d2 = (grid**2).sum(1)
    keep = d2 <= r * r + r * 0.5
    return grid[keep].astype(np.int32), (d2[keep] / max(r * r, 1)).astype(np.float32)


_SPECKLE = np.random.default_rng(12345).normal(0, 5, 65521).astype(np.float32)  # noise on painted structures
_AXON_STAMP = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.int32)


class SyntheticBrain:
    """Deterministic X-ray-like tissue over the whole prasad2020 frame, rendered for one cutout at a time.

    Every 64³ block of the frame draws its own cells, vessel and axon segments from a generator seeded by
    ``(seed, block index)``; a cutout paints the primitives of every block within reach, so voxels agree
    between overlapping cutouts.

    Args:
        seed: selects the tissue.
        memo: rendered cutouts kept (image and label requests for the same box render once).
    """

    def __init__(self, seed: int = 0, memo: int = 8) -> None:
        self.seed = int(seed)
        # background of each zone: its level, a smooth grain of zone-dependent amplitude and fine noise, as one
        # periodic int16 table (periods 37, 41, 43 along z, y, x) so a cutout costs a single lookup per voxel
        rng = np.random.default_rng((self.seed, 7))
        grain = gaussian_filter(rng.standard_normal(_PERIOD), 1.2, mode="wrap")
        grain /= grain.std()
        fine = rng.standard_normal(_PERIOD)
        self._tables = [np.rint(zn.background + zn.grain * grain + 4.0 * fine).astype(np.int16) for zn in ZONES]
        self._blocks: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}
        self._memo: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._memo_size = memo
        self._lock = threading.Lock()

    # -- primitives ----------------------------------------------------------------------------------------
    @staticmethod
    def zone_index(x: np.ndarray) -> np.ndarray:
        return np.searchsorted([z.x_start for z in ZONES], x, side="right") - 1

    def _segments(self, rng, lo, hi, count, length, angle=None, z_slope=None, origins=None):
        """Points along ``count`` straight segments starting in the block, kept within ``REACH`` of it."""
        if count == 0:
            return np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
        starts = origins if origins is not None else rng.uniform(lo, hi, (count, 3))
        if angle is None:  # any direction
            direction = rng.standard_normal((count, 3))
        else:  # mostly in the slice plane, around the preferred angle
            theta = angle + rng.normal(0, 0.35, count)
            slope = rng.uniform(-z_slope, z_slope, count)
            direction = np.stack([slope, np.sin(theta), np.cos(theta)], 1)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        lengths = rng.uniform(*length, count)
        steps = np.arange(0, length[1], 1.0, dtype=np.float32)
        points = starts[:, None, :] + direction[:, None, :] * steps[None, :, None]  # [count, steps, 3]
        keep = (steps[None, :] < lengths[:, None]) & np.all((points >= lo - REACH) & (points < hi + REACH), axis=2)
        owner = np.broadcast_to(np.arange(count)[:, None], keep.shape)
        return points[keep].astype(np.float32), owner[keep]

    def _block(self, bz: int, by: int, bx: int) -> dict[str, np.ndarray]:
        key = (bz, by, bx)
        if key in self._blocks:
            return self._blocks[key]
        rng = np.random.default_rng((self.seed, bz, by, bx))
        lo = np.array([bz, by, bx], np.float64) * BLOCK
        hi = lo + BLOCK
        zone = ZONES[int(self.zone_index(np.array([lo[2] + BLOCK / 2]))[0])]

        n_cells = rng.poisson(zone.cells)
        cells = rng.uniform(lo, hi, (n_cells, 3)).astype(np.float32)
        cell_r = rng.integers(zone.cell_radius[0], zone.cell_radius[1] + 1, n_cells)
        cell_peak = rng.uniform(195, 235, n_cells).astype(np.float32)

        n_vessels = rng.poisson(zone.vessels)
        vessel_pts, owner = self._segments(rng, lo, hi, n_vessels, (40, 96))
        vessel_r = rng.integers(2, 5, n_vessels)[owner]
        vessel_pts = vessel_pts[::2]  # a ball every 2 voxels makes a smooth tube
        vessel_r = vessel_r[::2]
        vessel_level = rng.uniform(18, 34, max(n_vessels, 1))[owner[::2]].astype(np.float32)

        n_axons = rng.poisson(zone.axons)
        origins = None
        if zone.bundled and n_axons:  # fascicles: axons start around a few bundle centres
            centres = rng.uniform(lo, hi, (max(1, n_axons // 10), 3))
            origins = centres[rng.integers(0, len(centres), n_axons)] + rng.normal(0, 4, (n_axons, 3))
        axon_pts, owner = self._segments(
            rng, lo, hi, n_axons, (30, 80), angle=zone.axon_angle + rng.normal(0, 0.3), z_slope=0.15, origins=origins
        )
        axon_level = rng.uniform(68, 84, max(n_axons, 1))[owner].astype(np.float32)

        block = {
            "cells": cells,
            "cell_r": cell_r,
            "cell_peak": cell_peak,
            "vessels": vessel_pts,
            "vessel_r": vessel_r,
            "vessel_level": vessel_level,
            "axons": axon_pts,
            "axon_level": axon_level,
        }
        self._blocks[key] = block
        return block

    # -- rendering -----------------------------------------------------------------------------------------
    def render(self, z: tuple[int, int], y: tuple[int, int], x: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Image (uint8) and microstructure classes (uint8; 0 where unannotated) of a ``[z, y, x]`` cutout."""
        key = (tuple(z), tuple(y), tuple(x))
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        image, classes = self._render(z, y, x)
        with self._lock:
            self._memo[key] = (image, classes)
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return image, classes

    def _render(self, z, y, x) -> tuple[np.ndarray, np.ndarray]:
        origin = np.array([z[0], y[0], x[0]], np.int64)
        shape = (z[1] - z[0], y[1] - y[0], x[1] - x[0])
        zz, yy, xx = (np.arange(*r) for r in (z, y, x))
        zone = self.zone_index(xx)
        image = np.empty(shape, np.int16)
        for index in np.unique(zone):
            columns = np.flatnonzero(zone == index)
            lookup = np.ix_(zz % _PERIOD[0], yy % _PERIOD[1], xx[columns] % _PERIOD[2])
            if len(columns) == len(xx):
                image[...] = self._tables[index][lookup]
            else:
                image[:, :, columns] = self._tables[index][lookup]
        classes = np.zeros(shape, np.uint8)

        margin = REACH + 6
        ranges = [
            range(max(lo - margin, 0) // BLOCK, (min(hi + margin, FRAME[a][1]) - 1) // BLOCK + 1)
            for a, (lo, hi) in zip("zyx", (z, y, x))
        ]
        blocks = [self._block(bz, by, bx) for bz in ranges[0] for by in ranges[1] for bx in ranges[2]]

        def stack(name):
            return np.concatenate([b[name] for b in blocks]) if blocks else np.zeros(0)

        # axons first, then cells, then vessels: later structures cover earlier ones
        axons = stack("axons")
        self._paint(image, classes, origin, axons, _AXON_STAMP, None, stack("axon_level"), None, AXON)
        cells, cell_r, peak = stack("cells"), stack("cell_r"), stack("cell_peak")
        for r in np.unique(cell_r):
            sel = cell_r == r
            offsets, rim = _ball(int(r))
            self._paint(image, classes, origin, cells[sel], offsets, rim, peak[sel], -45.0, CELL)
        vessels, vessel_r, vessel_level = stack("vessels"), stack("vessel_r"), stack("vessel_level")
        for r in np.unique(vessel_r):
            sel = vessel_r == r
            offsets, rim = _ball(int(r))
            self._paint(image, classes, origin, vessels[sel], offsets, rim, vessel_level[sel], 12.0, VESSEL)

        np.clip(image, 0, 255, out=image)
        return image.astype(np.uint8), classes * self._annotated(z, y, x)

    @staticmethod
    def _paint(image, classes, origin, centres, offsets, rim, level, shade, label) -> None:
        """Set every voxel of a stamp around each centre: intensity ``level (+ shade·rim)`` and class ``label``."""
        if len(centres) == 0:
            return
        shape = np.array(image.shape)
        base = np.rint(centres).astype(np.int64) - origin
        # drop centres whose stamp cannot reach the cutout
        reach = int(np.abs(offsets).max())
        near = np.all((base >= -reach) & (base < shape + reach), axis=1)
        base, level = base[near], level[near]
        if len(base) == 0:
            return
        points = base[:, None, :] + offsets[None, :, :]  # [n, k, 3]
        inside = np.all((points >= 0) & (points < shape), axis=2)
        values = np.broadcast_to(level[:, None], inside.shape)
        if rim is not None:
            values = values + shade * rim[None, :]
        p = points[inside]
        g = p + origin  # frame coordinates: the noise of a voxel does not depend on the cutout
        noise = _SPECKLE[(g[:, 0] * 7919 + g[:, 1] * 104729 + g[:, 2] * 1299709) % len(_SPECKLE)]
        image[p[:, 0], p[:, 1], p[:, 2]] = np.rint(values[inside] + noise)
        classes[p[:, 0], p[:, 1], p[:, 2]] = label

    @staticmethod
    def _annotated(z, y, x) -> np.ndarray:
        """1 where the cutout lies inside an annotated cube, else 0 (uint8, broadcastable to the cutout)."""
        mask = np.zeros((1, y[1] - y[0], x[1] - x[0]), np.uint8)
        for (cx0, cx1), (cy0, cy1) in ANNOTATED_CUBES.values():
            ys = slice(max(cy0, y[0]) - y[0], max(min(cy1, y[1]) - y[0], 0))
            xs = slice(max(cx0, x[0]) - x[0], max(min(cx1, x[1]) - x[0], 0))
            mask[0, ys, xs] = 1
        zmask = ((np.arange(*z) >= ANNOTATED_Z[0]) & (np.arange(*z) < ANNOTATED_Z[1])).astype(np.uint8)
        return mask * zmask[:, None, None]

    @staticmethod
    def roi(z, y, x) -> np.ndarray:
        """Region ids of a cutout (uint64): a zone's id, minority ids in edge bands, 0 outside z 109–459."""
        xx = np.arange(*x)
        ids = np.array([zn.roi for zn in ZONES], np.uint64)[SyntheticBrain.zone_index(xx)]
        for x0, x1, value in ROI_BANDS:
            ids[(xx >= x0) & (xx < x1)] = value
        zz = np.arange(*z)
        inside = ((zz >= ROI_Z[0]) & (zz < ROI_Z[1])).astype(np.uint64)
        out = inside[:, None, None] * ids[None, None, :]
        return np.ascontiguousarray(np.broadcast_to(out, (len(zz), y[1] - y[0], len(xx))))

    def cutout(self, channel: str, z, y, x) -> np.ndarray:
        """The ``[z, y, x]`` array a channel holds, in the channel's datatype."""
        if channel == "image":
            return self.render(z, y, x)[0]
        if channel == "pixel_labels":
            return self.render(z, y, x)[1].astype(np.uint64)
        if channel == "roi_labels":
            return self.roi(z, y, x)
        raise KeyError(channel)


# ---------------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------------
_CUTOUT = re.compile(r"^/v1/cutout/([^/]+)/([^/]+)/([^/]+)/(\d+)/(\d+):(\d+)/(\d+):(\d+)/(\d+):(\d+)/?$")
_CHANNEL = re.compile(r"^/v1/collection/([^/]+)/experiment/([^/]+)/channel/([^/]+)/?$")
_EXPERIMENT = re.compile(r"^/v1/collection/([^/]+)/experiment/([^/]+)/?$")
_COLLECTION = re.compile(r"^/v1/collection/([^/]+)/?$")
_COORD = re.compile(r"^/v1/coord/([^/]+)/?$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"status": status, "code": 4000 + status % 100, "message": message})

    def do_GET(self) -> None:
        emulator = self.server.emulator
        path = urlsplit(self.path).path
        emulator._record(path)
        if self.headers.get("Authorization") != f"Token {emulator.token}":
            return self._json(401, {"detail": "Invalid token."})
        failure = emulator._take_failure()
        if failure:
            return self._error(failure, "injected failure")
        try:
            if m := _CUTOUT.match(path):
                return self._cutout(*m.groups())
            if m := _CHANNEL.match(path):
                return self._channel(*m.groups())
            if m := _EXPERIMENT.match(path):
                return self._experiment(*m.groups())
            if m := _COLLECTION.match(path):
                return self._collection(*m.groups())
            if m := _COORD.match(path):
                return self._coord(*m.groups())
        except BrokenPipeError:
            return None
        return self._error(404, f"no such resource: {path}")

    def _collection(self, collection: str) -> None:
        if collection != "prasad":
            return self._error(404, f"Collection {collection} not found")
        experiments = sorted({e for c, e, _ in CHANNELS if c == collection})
        self._json(200, {"name": collection, "description": "X-ray microCT, Prasad et al. 2020 (emulated)",
                         "experiments": experiments, "creator": "emulator"})  # fmt: skip

    def _experiment(self, collection: str, experiment: str) -> None:
        channels = sorted(ch for c, e, ch in CHANNELS if (c, e) == (collection, experiment))
        if not channels:
            return self._error(404, f"Experiment {experiment} not found in {collection}")
        self._json(200, {
            "name": experiment, "description": "emulated", "collection": collection, "coord_frame": COORD_FRAME,
            "num_hierarchy_levels": 1, "hierarchy_method": "isotropic", "num_time_samples": 1, "time_step": None,
            "time_step_unit": "", "channels": channels, "creator": "emulator",
        })  # fmt: skip

    def _channel(self, collection: str, experiment: str, channel: str) -> None:
        spec = CHANNELS.get((collection, experiment, channel))
        if spec is None:
            return self._error(404, f"Channel {channel} not found in {collection}/{experiment}")
        kind, datatype = spec
        self._json(200, {
            "name": channel, "description": "emulated", "experiment": experiment, "default_time_sample": 0,
            "type": kind, "base_resolution": 0, "datatype": datatype, "creator": "emulator",
            "sources": [] if kind == "image" else ["image"], "downsample_status": "DOWNSAMPLED", "related": [],
            "storage_type": "spdb", "bucket": None, "cv_path": None,
        })  # fmt: skip

    def _coord(self, name: str) -> None:
        if name != COORD_FRAME:
            return self._error(404, f"Coordinate frame {name} not found")
        self._json(200, {
            "name": name, "description": "prasad2020 frame (emulated)",
            "x_start": FRAME["x"][0], "x_stop": FRAME["x"][1], "y_start": FRAME["y"][0], "y_stop": FRAME["y"][1],
            "z_start": FRAME["z"][0], "z_stop": FRAME["z"][1],
            "x_voxel_size": VOXEL_UM, "y_voxel_size": VOXEL_UM, "z_voxel_size": VOXEL_UM, "voxel_unit": "micrometers",
        })  # fmt: skip

    def _cutout(self, collection, experiment, channel, resolution, x0, x1, y0, y1, z0, z1) -> None:
        import blosc

        spec = CHANNELS.get((collection, experiment, channel))
        if spec is None:
            return self._error(404, f"Channel {channel} not found in {collection}/{experiment}")
        if int(resolution) != 0:
            return self._error(400, f"Resolution {resolution} is not available (the emulator serves 0)")
        box = {"x": (int(x0), int(x1)), "y": (int(y0), int(y1)), "z": (int(z0), int(z1))}
        for axis, (lo, hi) in box.items():
            if not FRAME[axis][0] <= lo < hi <= FRAME[axis][1]:
                return self._error(400, f"{axis} range {lo}:{hi} is outside the coordinate frame {FRAME[axis]}")
        data = self.server.emulator.brain.cutout(channel, box["z"], box["y"], box["x"])
        payload = blosc.compress(np.ascontiguousarray(data).tobytes(), typesize=data.dtype.itemsize, clevel=5)
        if self.server.emulator._take_truncation():
            payload = payload[: len(payload) // 2]
        self._send(200, payload, "application/blosc")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: BossDBEmulator


class BossDBEmulator:
    """A Boss API server on ``127.0.0.1`` (free port), run in a thread; a context manager.

    Args:
        token: the token requests must carry (``Authorization: Token <token>``).
        seed: selects the synthetic tissue.

    Attributes:
        requests: paths requested so far (tests assert that cached data causes none).
    """

    def __init__(self, token: str = "emulator-token", seed: int = 0) -> None:
        self.token = token
        self.brain = SyntheticBrain(seed)
        self.requests: list[str] = []
        self._failures: list[int] = []
        self._truncations = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> BossDBEmulator:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.emulator = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name="bossdb-emulator"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> BossDBEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` (a flaky server)."""
        with self._lock:
            self._failures.extend([status] * count)

    def truncate_next(self, count: int = 1) -> None:
        """Send only half of the next ``count`` cutout payloads (a broken transfer)."""
        with self._lock:
            self._truncations += count

    def cutout_requests(self) -> list[str]:
        return [p for p in self.requests if p.startswith("/v1/cutout/")]

    def _record(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _take_truncation(self) -> bool:
        with self._lock:
            if self._truncations:
                self._truncations -= 1
                return True
            return False


@contextmanager
def intern_environment(host: str, token: str, home: str | Path, protocol: str = "http") -> Iterator[None]:
    """Point ``intern`` at ``protocol://host``: ``INTERN_*`` variables and a ``HOME`` without ``~/.intern``."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if (home / ".intern").exists():
        raise RuntimeError(f"{home} has a .intern folder; intern would read it before the environment")
    values = {"INTERN_PROTOCOL": protocol, "INTERN_HOST": host, "INTERN_TOKEN": token, "HOME": str(home)}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_TASK2_CACHE: dict[str, object] = {}


def task2_cache(tmp_root: Path) -> dict[str, object]:
    """Fetch the Task 2 cutouts (all four task definitions share them) once per test session, then stop the server.

    Runs the real ``intern`` client against an emulator through :func:`neurobundles.data.mtneuro.prefetch` into
    ``tmp_root/cache``; every later use reads only that cache. Returns ``{"cache": Path, "requests": [paths],
    "seconds": float}``. Memoised at module level, so test modules that both import this one share one download.
    """
    if not _TASK2_CACHE:
        import time

        from neurobundles.data.mtneuro import prefetch

        start = time.perf_counter()
        with BossDBEmulator() as emulator, intern_environment(emulator.host, emulator.token, tmp_root / "home"):
            prefetch("task2_2D_3class", tmp_root / "cache", backoff=0.01)
        _TASK2_CACHE.update(cache=tmp_root / "cache", requests=list(emulator.requests),
                            seconds=time.perf_counter() - start)  # fmt: skip
    return _TASK2_CACHE
