"""MeshNet's dilated convolutions on the CPU through a small compiled kernel (an optional fast path).

oneDNN vectorises 3D convolutions over channels; with 5 channels (the tissue model) most of every SIMD
register idles. ``dilated_conv3d.c`` vectorises over the contiguous x axis instead and keeps a block of
output channels in registers. It is compiled on first use with the system C compiler (``$CC``, else
``cc``) for this CPU, one shared library per layer shape, cached under ``NEUROBUNDLES_HOME/kernels``.
Without a compiler, for layers it does not cover, or for wide networks where oneDNN is faster
(:func:`pays`), callers use PyTorch.
"""

from __future__ import annotations

import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from neurobundles.inferers.compiled import build_library, run_in_parts, vector_lanes

__all__ = ["compiled_features", "conv_and_rest", "kernel_available", "pays", "supports"]

_SOURCE = Path(__file__).with_name("dilated_conv3d.c")
_MAX_REGISTER_BLOCK = 24  # output channels kept in vector registers at once (x86-64 AVX-512 has 32)
NARROW = 8
"""Widest layer for which the kernel beats oneDNN. Measured on 2 AVX-512 cores, one 3×3×3 layer: 5 channels
44 vs 3 GFLOP/s (oneDNN default layout) and 3.3× oneDNN channels-last on a whole 256³ network; 15 channels
55 vs 64, 21 channels 52 vs 60, 30 channels 54 vs 86 GFLOP/s: wide layers stay with oneDNN."""


def _register_block(out_channels: int) -> int:
    """Largest divisor of ``out_channels`` that fits the register budget."""
    return max(b for b in range(1, min(out_channels, _MAX_REGISTER_BLOCK) + 1) if out_channels % b == 0)


@functools.cache
def _kernel(in_channels: int, out_channels: int) -> ctypes._CFuncPtr | None:
    """The compiled ``dilated_conv3d`` for one layer shape, or ``None`` (with a warning) if it cannot be built."""
    defines = {"CI": in_channels, "CO": out_channels, "COB": _register_block(out_channels), "VL": vector_lanes()}
    library = build_library(_SOURCE, defines)
    if library is None:
        return None
    function = library.dilated_conv3d
    function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 7
    function.restype = None
    return function


def kernel_available() -> bool:
    """Whether the kernel can be built and loaded here (for tests and benchmarks)."""
    return _kernel(1, 1) is not None


def _is_relu(module: nn.Module) -> bool:
    return isinstance(module, nn.ReLU)


def conv_and_rest(block: nn.Module) -> tuple[nn.Conv3d, list[nn.Module]] | None:
    """Split a MONAI ``Convolution`` block into its conv and the modules after it (norm, act, dropout)."""
    conv = getattr(block, "conv", None)
    if not isinstance(conv, nn.Conv3d):
        return None
    rest = [m for m in getattr(block, "adn", nn.Sequential()).children() if not isinstance(m, nn.Dropout)]
    return conv, rest


def _covered(conv: nn.Conv3d) -> bool:
    dilation = conv.dilation[0]
    return (
        conv.kernel_size == (3, 3, 3)
        and conv.stride == (1, 1, 1)
        and conv.groups == 1
        and conv.dilation == (dilation,) * 3
        and conv.padding == (dilation,) * 3
        and conv.padding_mode == "zeros"
        and conv.weight.dtype == torch.float32
    )


def supports(network: nn.Module) -> bool:
    """True for a network whose ``features`` are blocks of 3×3×3 'same' dilated convolutions (MeshNet)."""
    blocks = getattr(network, "features", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
        return False
    for block in blocks:
        parts = conv_and_rest(block)
        if parts is None or not _covered(parts[0]):
            return False
    return True


def pays(network: nn.Module) -> bool:
    """Whether the kernel is the faster choice for ``network``: supported, and no layer wider than :data:`NARROW`."""
    return supports(network) and all(
        parts[0].out_channels <= NARROW for parts in map(conv_and_rest, network.features) if parts
    )


@torch.no_grad()
def compiled_features(network: nn.Module, inputs: torch.Tensor, threads: int | None = None) -> torch.Tensor | None:
    """``network.features(inputs)`` through the compiled kernel; ``None`` when it does not apply here.

    Each block's convolution (plus its ReLU, when that is all that follows) runs in the kernel, with
    depth slabs split across ``threads`` (default: ``torch.get_num_threads()``); any norm or other
    activation runs in PyTorch afterwards, so every MeshNet variant is covered.
    """
    if inputs.device.type != "cpu" or inputs.dtype != torch.float32 or inputs.ndim != 5 or not supports(network):
        return None
    threads = threads or torch.get_num_threads()
    values = inputs.contiguous()
    spare: torch.Tensor | None = None  # the previous layer's input: reused as an output buffer, since
    # first-touch page faults of a fresh 256³ buffer cost about as much as a fast layer's arithmetic
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for block in network.features:
            conv, rest = conv_and_rest(block)
            kernel = _kernel(conv.in_channels, conv.out_channels)
            if kernel is None:
                return None
            shape = (values.shape[0], conv.out_channels, *values.shape[2:])
            out = spare if spare is not None and spare.shape == shape else torch.empty(shape, dtype=torch.float32)
            fuse_relu = len(rest) == 1 and _is_relu(rest[0])
            _convolve(kernel, conv, values, out, fuse_relu, pool, threads)
            spare = values if values.data_ptr() != inputs.data_ptr() else None
            values = out
            for module in [] if fuse_relu else rest:
                values = module(values)
    return values


def _convolve(
    kernel: ctypes._CFuncPtr,
    conv: nn.Conv3d,
    values: torch.Tensor,
    out: torch.Tensor,
    relu: bool,
    pool: ThreadPoolExecutor,
    threads: int,
) -> None:
    """``out = conv(values)`` (+ ReLU), depth split across the pool's threads (ctypes releases the GIL)."""
    batch, _, depth, height, width = values.shape
    values = values.contiguous()
    weight = conv.weight.detach().reshape(conv.out_channels, conv.in_channels, 27).contiguous()
    bias = conv.bias.detach().contiguous() if conv.bias is not None else torch.zeros(conv.out_channels)
    for item in range(batch):
        source, target = values[item], out[item]
        arguments = (source.data_ptr(), weight.data_ptr(), bias.data_ptr(), target.data_ptr(), depth, height, width)
        run_in_parts(pool, kernel, depth, threads, lambda _, a=arguments: (*a, conv.dilation[0], int(relu)))
