"""Which CPU forward path a bundle runs: exact fp32, or a faster one whose labels were measured against fp32.

A bundle's ``inference.json`` lists what was measured for each faster path (``measured_paths``: label
agreement with fp32 on the shared real T1s, and speed-up over the fp32 path per CPU class, since a kernel
that wins on AVX2 may lose to oneDNN on AVX-512), written from ``python -m neurobundles.bench``. With
``precision="auto"`` the fastest listed path that this machine can run, whose agreement is at least
:data:`AGREEMENT_FLOOR` and whose speed-up on this CPU class is above 1 is chosen; a path nobody measured
for the bundle (or for this CPU class) is never chosen. ``precision="fp32"`` forces exact fp32.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

from torch import nn

from neurobundles.inferers import winograd
from neurobundles.inferers.compiled import cpu_flags

__all__ = ["AGREEMENT_FLOOR", "PATHS", "choose_path", "cpu_class", "cpu_flags", "native_bf16"]


AGREEMENT_FLOOR = 0.999
"""Fraction of voxels whose label must equal fp32's on every measured image."""
PATHS = {
    "fp32": "exact fp32 (compiled direct kernel or oneDNN)",
    "winograd": "fp32 Winograd F(4,3) kernel",
    "bf16": "bf16 autocast (oneDNN)",
}
_NEEDS = {
    "winograd": "a MeshNet-like network of known norms and activations, and a C compiler ($CC or cc)",
    "bf16": "a CPU with AVX512-BF16 or AMX",
}


def cpu_class() -> str:
    """The class of CPU a path's speed-up was measured on: ``avx512``, ``avx2``, else the machine's name."""
    flags = cpu_flags()
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else platform.machine() or "other"


def native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16); elsewhere bf16 is emulated, slowly."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _available(path: str, network: nn.Module) -> bool:
    if path == "winograd":
        return winograd.applies(network) and winograd.kernel_available()
    if path == "bf16":
        return native_bf16()
    return path == "fp32"


def choose_path(
    precision: str, measured_paths: Mapping[str, Mapping[str, Any]] | None, network: nn.Module
) -> tuple[str, str]:
    """The CPU path to run and a one-line reason (printed once per run).

    ``precision`` is ``"auto"`` or a key of :data:`PATHS` (forced: an error if this machine cannot run it).
    """
    if precision not in {"auto", *PATHS}:
        raise ValueError(f"precision must be 'auto' or one of {sorted(PATHS)}, got {precision!r}.")
    if precision != "auto":
        if not _available(precision, network):
            needs = _NEEDS.get(precision, "")
            raise RuntimeError(
                f"precision={precision!r} cannot run here ({PATHS[precision]} needs {needs}); use 'auto' or 'fp32'."
            )
        return precision, f"{PATHS[precision]} (forced by precision={precision!r})"
    candidates = []
    kind = cpu_class()
    for path, numbers in (measured_paths or {}).items():
        agreement, speedup = numbers.get("agreement"), (numbers.get("speedup") or {}).get(kind)
        measured = path in PATHS and agreement is not None and speedup is not None
        if measured and agreement >= AGREEMENT_FLOOR and speedup > 1 and _available(path, network):
            candidates.append((speedup, path, agreement))
    if not candidates:
        return "fp32", f"{PATHS['fp32']}: no faster path measured for this bundle and CPU class ({kind}) runs here"
    speedup, path, agreement = max(candidates)
    return path, (
        f"{PATHS[path]}: measured {speedup:.2f}× the fp32 path on {kind} CPUs, labels equal to fp32 on {agreement:.4%} "
        "of voxels "
        "(precision=fp32 forces exact fp32)"
    )
