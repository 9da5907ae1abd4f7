"""MeshNet's wide dilated layers on the CPU through Winograd F(4,3) (a measured fast path, not bit-exact).

Direct convolution (oneDNN, or ``cpu_kernel``) spends 27 multiply-adds per output voxel and channel pair;
Winograd's F(4×4×4, 3×3×3) spends 216 per 4×4×4 block of outputs (3.4 per output), plus transforms
(``winograd_conv3d.c``). Activations stay channels-last (``D×H×W×C``, channels padded to a multiple of 8
with zeros) from the first layer to the head, so nothing is transposed between layers; activations,
GroupNorm's statistics and the norm's scale and shift run inside the kernels. The sums are reassociated
and F(4,3)'s transforms amplify rounding (about 2e-5 relative per layer against 2e-7 for F(2,3)), so labels
can flip where two classes nearly tie: :mod:`neurobundles.inferers.precision` only chooses this path for a
bundle whose label agreement with fp32 was measured.
"""

from __future__ import annotations

import ctypes
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from neurobundles.inferers.compiled import build_library, run_in_parts
from neurobundles.inferers.cpu_kernel import conv_and_rest, supports

__all__ = ["applies", "head_argmax", "kernel_available", "stored_channels", "winograd_features"]

_SOURCE = Path(__file__).with_name("winograd_conv3d.c")
_HEAD_SOURCE = Path(__file__).with_name("head_argmax.c")
_VECTOR = 8  # floats per vector in the kernel (256-bit: AVX2, and AVX-512 CPUs run it as well)
_OUTPUTS = 4  # outputs per tile and axis: F(4,3); the kernel also builds F(2,3) (-DM=2), 1.3–1.8× slower here
_REGISTER_TILES = {1: 6, 2: 6, 3: 3, 4: 3}
"""Tiles per register block by output vectors per voxel (channels / 8). Measured on 2 AVX2 cores, one layer at
256²×96, F(2,3): 15 channels 0.36 s with 6 tiles against 0.53 s with 4; 21 channels 0.75 s with 3 against 0.78 s
with 4 and 0.96 s with 6; 30 channels 1.40 s with 3 against 1.48–1.79 s with 2; F(4,3) the same ranking.
Wider layers take 2."""
_TILES = 6  # tiles per chunk: F(4,3)'s 216 transformed inputs and products per tile stay in L2 (12 was 5–15 % slower)
_ELEMENTWISE = (nn.ReLU, nn.ELU, nn.GELU, nn.LeakyReLU, nn.SiLU, nn.Tanh, nn.Identity)
"""Activations applied in place to the padded buffer: each maps 0 to 0, so padding channels stay zero."""
_G = torch.tensor(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=torch.float64,
)
"""F(4,3)'s weight transform (interpolation points 0, ±1, ±2, ∞), as in the kernel's B and A."""


def stored_channels(channels: int) -> int:
    """Channels per voxel in the channels-last buffers: ``channels`` rounded up to whole vectors."""
    return -(-channels // _VECTOR) * _VECTOR


@functools.cache
def _kernel(in_channels: int, stored_in: int, stored_out: int) -> ctypes.CDLL | None:
    block = _REGISTER_TILES.get(stored_out // _VECTOR, 2)
    defines = {"M": _OUTPUTS, "CI": in_channels, "CIP": stored_in, "COP": stored_out, "T": _TILES, "R": block}
    library = build_library(_SOURCE, defines)
    if library is None:
        return None
    library.winograd_conv3d.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 5 + [ctypes.c_float]
    library.winograd_conv3d.argtypes += [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    library.winograd_conv3d.restype = None
    library.affine_act.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int, ctypes.c_float, ctypes.c_long, ctypes.c_long]
    library.affine_act.restype = None
    library.winograd_z_bases.argtypes = [ctypes.c_int, ctypes.c_int]
    library.winograd_z_bases.restype = ctypes.c_int
    return library


def kernel_available() -> bool:
    """Whether the Winograd kernel can be built and loaded here."""
    return _kernel(1, 1, _VECTOR) is not None


def _rest_supported(module: nn.Module) -> bool:
    return isinstance(module, (*_ELEMENTWISE, nn.GroupNorm, nn.BatchNorm3d))


def applies(network: nn.Module) -> bool:
    """A MeshNet-like network (see ``cpu_kernel.supports``) whose norms and activations this path knows."""
    return supports(network) and all(
        _rest_supported(module) for block in network.features for module in conv_and_rest(block)[1]
    )


def _transformed_weights(conv: nn.Conv3d, stored_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``G w Gᵀ`` along each axis (positions × in × out, float64 then rounded once) and the bias, zero-padded."""
    weight = conv.weight.detach().double()
    transformed = torch.einsum("ai,bj,ck,oxijk->abcxo", _G, _G, _G, weight).reshape(
        -1, conv.in_channels, conv.out_channels
    )
    padded = torch.zeros(transformed.shape[0], conv.in_channels, stored_out, dtype=torch.float32)
    padded[..., : conv.out_channels] = transformed
    bias = torch.zeros(stored_out, dtype=torch.float32)
    if conv.bias is not None:
        bias[: conv.out_channels] = conv.bias.detach()
    return padded, bias


def _activation(module: nn.Module | None) -> tuple[int, float] | None:
    """The kernel's code (and ELU's alpha) for an activation it computes itself, else ``None``."""
    if isinstance(module, nn.ReLU):
        return 1, 0.0
    if isinstance(module, nn.ELU):
        return 2, float(module.alpha)
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return 3, 0.0
    return None


def _norm_affine(
    module: nn.Module, moments: tuple[torch.Tensor, torch.Tensor] | None, stored: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale, shift`` (float32, zero for the padding channels) that GroupNorm, given the
    per-channel ``moments`` (mean and mean square) of its input, or (eval) BatchNorm applies."""
    if isinstance(module, nn.BatchNorm3d):
        scale = (module.running_var.double() + module.eps).rsqrt()
        shift = -module.running_mean.double() * scale
    else:
        mean, square = moments
        size = mean.numel() // module.num_groups  # per-channel moments combined into per-group ones
        group_mean = mean.view(-1, size).mean(dim=1, keepdim=True)
        group_variance = square.view(-1, size).mean(dim=1, keepdim=True) - group_mean.square()
        scale = (group_variance.clamp(min=0) + module.eps).rsqrt().expand(-1, size).reshape(-1)
        shift = -group_mean.expand(-1, size).reshape(-1) * scale
    if module.affine:
        shift = shift * module.weight.double() + module.bias.double()
        scale = scale * module.weight.double()
    padded = torch.zeros(2, stored, dtype=torch.float32)
    padded[0, : scale.numel()], padded[1, : shift.numel()] = scale, shift
    return padded[0], padded[1]


def _moments(values: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    variance, mean = torch.var_mean(values[..., :channels], dim=(0, 1, 2), unbiased=False)
    return mean.double(), (variance.double() + mean.double().square())


def _apply_rest(rest: list[nn.Module], values: torch.Tensor, channels: int, slices: int = 8) -> None:
    """Norms and activations after a convolution, in place, in as few passes over the buffer as GroupNorm's
    statistics allow: each pass runs a few slices at a time through every pending step, so the temporaries
    stay in cache and no second 256³ buffer is made."""
    pending: list[nn.Module | tuple[torch.Tensor, torch.Tensor]] = []

    def run() -> None:
        for start in range(0, values.shape[0], slices):
            part = values[start : start + slices]
            for step in pending:
                if isinstance(step, tuple):
                    part[..., :channels].mul_(step[0]).add_(step[1])
                else:
                    part.copy_(step(part))
        pending.clear()

    for module in rest:
        if isinstance(module, nn.GroupNorm) and pending:
            run()  # its statistics are those of the values after the steps before it
        if isinstance(module, _ELEMENTWISE):
            pending.append(module)
        else:
            moments = _moments(values, channels) if isinstance(module, nn.GroupNorm) else None
            scale, shift = _norm_affine(module, moments, channels)
            pending.append((scale, shift))
    if pending:
        run()


@torch.no_grad()
def winograd_features(
    network: nn.Module, inputs: torch.Tensor, threads: int | None = None, timings: list[float] | None = None
) -> torch.Tensor | None:
    """``network.features(inputs)`` through the Winograd kernel, as a channels-last view; ``None`` where it does
    not apply here (not a CPU float32 volume, a network in training mode, a layer it does not know, or no C
    compiler).

    The result is ``B×C×D×H×W`` with strides of a ``B×D×H×W×C'`` buffer (``C' ≥ C`` zero-padded channels).
    ``timings``, if given, receives the seconds each block took (for the benchmark's per-layer rates).
    """
    if inputs.device.type != "cpu" or inputs.dtype != torch.float32 or inputs.ndim != 5 or network.training:
        return None
    if not applies(network):
        return None
    threads = threads or torch.get_num_threads()
    items = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for item in inputs:
            values = _item_features(network, item.permute(1, 2, 3, 0).contiguous(), pool, threads, timings)
            if values is None:
                return None
            items.append(values)
    channels = conv_and_rest(network.features[-1])[0].out_channels
    stacked = items[0].unsqueeze(0) if len(items) == 1 else torch.stack(items)
    return stacked[..., :channels].permute(0, 4, 1, 2, 3)


def _item_features(
    network: nn.Module,
    values: torch.Tensor,
    pool: ThreadPoolExecutor,
    threads: int,
    timings: list[float] | None = None,
) -> torch.Tensor | None:
    """One volume (``D×H×W×C``) through every block; buffers are reused (first-touch page faults cost as much
    as a fast layer's arithmetic)."""
    spare: torch.Tensor | None = None
    for block in network.features:
        start = time.perf_counter()
        conv, rest = conv_and_rest(block)
        stored_out = stored_channels(conv.out_channels)
        library = _kernel(conv.in_channels, values.shape[-1], stored_out)
        if library is None:
            return None
        shape = (*values.shape[:3], stored_out)
        out = spare if spare is not None and spare.shape == shape else torch.empty(shape, dtype=torch.float32)
        fused = _activation(rest[0]) if rest else None  # an activation right after the convolution
        after = rest[1:] if fused else rest
        norm = after[0] if after and isinstance(after[0], (nn.GroupNorm, nn.BatchNorm3d)) else None
        norm_act = _activation(after[1]) if len(after) == 2 else (0, 0.0) if len(after) == 1 else None
        in_kernel = norm is not None and norm_act is not None  # the norm (and its activation) in one C pass
        sums = torch.zeros(threads, 2, stored_out, dtype=torch.float64) if isinstance(norm, nn.GroupNorm) else None
        _convolve(library, conv, values, out, fused or (0, 0.0), sums if in_kernel else None, pool, threads)
        spare, values = values if values.shape[-1] == stored_out else None, out
        if in_kernel:
            moments = None
            if sums is not None:
                total = sums[:, :, : conv.out_channels].sum(0) / values[..., 0].numel()
                moments = (total[0], total[1])
            scale, shift = _norm_affine(norm, moments, stored_out)
            _affine_act(library, values, scale, shift, norm_act, pool, threads)
        else:
            _apply_rest(after, values, conv.out_channels)
        if timings is not None:
            timings.append(time.perf_counter() - start)
    return values


def _convolve(
    library: ctypes.CDLL,
    conv: nn.Conv3d,
    values: torch.Tensor,
    out: torch.Tensor,
    activation: tuple[int, float],
    sums: torch.Tensor | None,
    pool: ThreadPoolExecutor,
    threads: int,
) -> None:
    """``out = act(conv(values))``, channels-last, z tiles split across the pool's threads; each thread adds its
    outputs and their squares to its row of ``sums`` (``threads × 2 × C'`` float64) when given."""
    depth, height, width, _ = values.shape
    weights, bias = _transformed_weights(conv, out.shape[-1])
    dilation = conv.dilation[0]
    arguments = (values.data_ptr(), weights.data_ptr(), bias.data_ptr(), out.data_ptr(), depth, height, width, dilation)
    arguments += activation

    def per_part(part: int) -> tuple:
        return (*arguments, sums[part].data_ptr() if sums is not None else None)

    run_in_parts(pool, library.winograd_conv3d, library.winograd_z_bases(depth, dilation), threads, per_part)


def _affine_act(
    library: ctypes.CDLL,
    values: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    activation: tuple[int, float],
    pool: ThreadPoolExecutor,
    threads: int,
) -> None:
    """``values = act(values * scale + shift)`` per channel, in place, voxels split across the pool's threads."""
    arguments = (values.data_ptr(), scale.data_ptr(), shift.data_ptr(), *activation)
    run_in_parts(pool, library.affine_act, values[..., 0].numel(), threads, lambda _: arguments)


@functools.cache
def _head_kernel(channels: int, stored: int, classes: int) -> ctypes._CFuncPtr | None:
    library = build_library(_HEAD_SOURCE, {"C": channels, "CS": stored, "KP": stored_channels(classes)})
    if library is None:
        return None
    function = library.head_argmax
    function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 2
    function.restype = None
    return function


@torch.no_grad()
def head_argmax(features: torch.Tensor, head: nn.Conv3d, threads: int | None = None) -> torch.Tensor | None:
    """Class index per voxel (``B×1×D×H×W`` float32) of a 1×1×1 convolution ``head`` over the channels-last
    ``features`` that :func:`winograd_features` returns, without materialising the logits; ``None`` if the
    kernel cannot be built."""
    batch, channels, depth, height, width = features.shape
    stored = features.stride(4)
    if features.stride(1) != 1 or features.stride(0) != depth * height * width * stored:
        raise ValueError("head_argmax needs the channels-last features of winograd_features.")
    function = _head_kernel(channels, stored, head.out_channels)
    if function is None:
        return None
    classes = stored_channels(head.out_channels)
    weight = torch.zeros(channels, classes)
    weight[:, : head.out_channels] = head.weight.detach().reshape(head.out_channels, channels).t()
    bias = torch.full((classes,), float("-inf"))
    bias[: head.out_channels] = head.bias.detach() if head.bias is not None else 0.0
    out = torch.empty((batch, 1, depth, height, width), dtype=torch.float32)
    threads = threads or torch.get_num_threads()
    arguments = (features.data_ptr(), weight.data_ptr(), bias.data_ptr(), out.data_ptr())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        run_in_parts(pool, function, batch * depth * height * width, threads, lambda _: arguments)
    return out
