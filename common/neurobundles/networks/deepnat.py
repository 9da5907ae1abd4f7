"""DeepNAT: a 3D patch network with coordinates and seven output heads (Wachinger, Reuter & Klein, 2018).

A 23³ T1 patch goes through three valid convolutions with one max-pooling (7³×32 → pool 2³/2 → 5³×64 → 3³×64),
two fully connected layers (1024, then 512 after the patch centre's six coordinates are appended) and seven
heads: the label of the centre voxel and of its six face neighbours, each its own softmax (multi-task learning).

The released network was Caffe, whose pooling rounds the output size *up*: the 17³ map after the first
convolution pools to 9³ (the last window holds one voxel), the convolutions leave a 3³×64 block, and the
network has 2 767 584 weights for 26 classes (2 770 742 with biases and batch-norm parameters) — the paper's
"≈ 2.7 M" and the released model's 2.77 M. ``ceil_mode=False`` gives PyTorch's default floor pooling
(8³ → 2³ block, 1.52 M parameters, 2.4× cheaper per voxel).

:func:`dense_logits` evaluates a trained network at every requested voxel without cutting patches: the
convolutions run once over a slab of the volume, the stride-2 pooling is evaluated for each of its eight
phases (the parity of the centre voxel along each axis), and the fully connected layers become a gather of the
3³ block plus a matrix product. Caffe's one-voxel last pooling window is handled exactly (see
:func:`dense_logits`), so the result equals the per-patch network up to float rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from monai.networks.layers.utils import get_act_layer
from torch import nn

from neurobundles.subvolumes import HEAD_OFFSETS, extract_patches

from .brainchop import load_pretrained

__all__ = [
    "HEAD_OFFSETS",
    "DeepNAT",
    "DeepNATCascade",
    "dense_logits",
    "extract_patches",
    "keep_trained_stages",
    "patch_logits",
]

_AXES = (0, 1, 2)
_SUBSETS: tuple[tuple[int, ...], ...] = tuple(
    subset for size in range(4) for subset in itertools.combinations(_AXES, size)
)
"""The eight subsets of the three axes, smallest first (so every subset comes after its own subsets)."""


class DeepNAT(nn.Module):
    """DeepNAT's patch network: ``forward(patches, coords)`` returns ``B×out_channels×num_heads`` logits.

    The class dimension comes first (channel-first like MONAI), so ``nn.CrossEntropyLoss()(logits, targets)``
    with ``targets`` of shape ``B×num_heads`` is the paper's loss: one cross-entropy per head, equal weights.

    Args:
        spatial_dims: must be 3.
        in_channels: image channels of a patch (1: T1).
        out_channels: classes per head (stage 1: 2, foreground/background; stage 2: 26, background + 25).
        coord_channels: coordinates appended after the first fully connected layer (6: 3 Cartesian +
            3 spectral; 0 disables them).
        patch_size: odd edge of the cubic input patch (23).
        channels: output channels of the three convolutions.
        kernel_sizes: kernel edge of the three valid convolutions (7, 5, 3).
        fc_channels: widths of the two fully connected layers (1024, 512).
        num_heads: output heads; the first ``num_heads`` entries of :data:`HEAD_OFFSETS` (7: centre + 6 faces).
        dropout: dropout after each fully connected layer (0.5).
        act: activation (MONAI name or ``(name, kwargs)``), ReLU in the paper.
        norm: ``"batch"`` (batch normalisation after the 2nd and 3rd convolution and the 2nd fully connected
            layer, as released) or ``None``. Only these keep :func:`dense_logits` equal to the per-patch network.
        ceil_mode: round the pooled size up like Caffe (the released network); ``False`` rounds down.
    """

    __jit_unused_properties__: ClassVar[list[str]] = ["head_offsets"]

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 26,
        coord_channels: int = 6,
        patch_size: int = 23,
        channels: Sequence[int] = (32, 64, 64),
        kernel_sizes: Sequence[int] = (7, 5, 3),
        fc_channels: Sequence[int] = (1024, 512),
        num_heads: int = 7,
        dropout: float = 0.5,
        act: str | tuple = "relu",
        norm: str | None = "batch",
        ceil_mode: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"DeepNAT is a 3D network; spatial_dims must be 3, got {spatial_dims}.")
        if len(channels) != 3 or len(kernel_sizes) != 3 or len(fc_channels) != 2:
            raise ValueError("channels and kernel_sizes need three entries, fc_channels two.")
        if patch_size % 2 != 1 or any(k % 2 != 1 for k in kernel_sizes):
            raise ValueError(f"patch_size and kernel_sizes must be odd, got {patch_size} and {tuple(kernel_sizes)}.")
        if not 1 <= num_heads <= len(HEAD_OFFSETS):
            raise ValueError(f"num_heads must be 1..{len(HEAD_OFFSETS)}, got {num_heads}.")
        if norm not in ("batch", None):
            raise ValueError(f"norm must be 'batch' or None (dense inference needs per-voxel norms), got {norm!r}.")
        k1, k2, k3 = (int(k) for k in kernel_sizes)
        conv1_size = patch_size - k1 + 1
        pooled = -(-conv1_size // 2) if ceil_mode else conv1_size // 2
        block = pooled - k2 + 1 - k3 + 1
        if conv1_size < 2 or block < 1:
            raise ValueError(f"a {patch_size}³ patch is too small for kernels {tuple(kernel_sizes)} and the pooling.")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.coord_channels, self.num_heads = coord_channels, num_heads
        self.patch_size, self.kernel_sizes, self.ceil_mode = patch_size, (k1, k2, k3), ceil_mode
        self.conv1_size, self.pooled_size, self.block_size = conv1_size, pooled, block
        self.single_last_window = ceil_mode and conv1_size % 2 == 1
        """Whether the last pooling window along each axis holds one voxel (Caffe's rounding up)."""
        c1, c2, c3 = (int(c) for c in channels)
        f1, f2 = (int(f) for f in fc_channels)
        batch = norm == "batch"
        self.act = get_act_layer(act)
        self.conv1 = nn.Conv3d(in_channels, c1, k1)
        self.pool = nn.MaxPool3d(2, 2, ceil_mode=ceil_mode)
        self.conv2 = nn.Conv3d(c1, c2, k2)
        self.norm2 = nn.BatchNorm3d(c2) if batch else nn.Identity()
        self.conv3 = nn.Conv3d(c2, c3, k3)
        self.norm3 = nn.BatchNorm3d(c3) if batch else nn.Identity()
        self.fc1 = nn.Linear(c3 * block**3, f1)
        self.fc2 = nn.Linear(f1 + coord_channels, f2)
        self.norm_fc2 = nn.BatchNorm1d(f2) if batch else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.Linear(f2, num_heads * out_channels)
        """All heads in one layer: the same weights as ``num_heads`` separate ``Linear(f2, out_channels)``."""
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier (Glorot) initialisation as in the paper, zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def head_offsets(self) -> tuple[tuple[int, int, int], ...]:
        return HEAD_OFFSETS[: self.num_heads]

    def convolutions(self, patches: torch.Tensor) -> torch.Tensor:
        """The convolutional stage: ``B×C×p³`` patches → ``B×channels[2]×b³`` (b = 3 as released)."""
        x = self.act(self.conv1(patches))
        x = self.pool(x)
        x = self.act(self.norm2(self.conv2(x)))
        return self.act(self.norm3(self.conv3(x)))

    def classify(self, block: torch.Tensor, coords: torch.Tensor | None) -> torch.Tensor:
        """The fully connected stage: flattened block features (``B×F``) and coordinates → ``B×K×H`` logits."""
        x = self.dropout(self.act(self.fc1(block)))
        if self.coord_channels:
            if coords is None:
                raise ValueError(f"DeepNAT expects {self.coord_channels} coordinates per patch, got none.")
            if coords.shape[-1] != self.coord_channels:
                raise ValueError(f"DeepNAT expects {self.coord_channels} coordinates per patch, got {coords.shape}.")
            x = torch.cat([x, coords.to(x.dtype)], dim=1)
        x = self.dropout(self.act(self.norm_fc2(self.fc2(x))))
        return self.heads(x).view(-1, self.num_heads, self.out_channels).transpose(1, 2)

    def forward(self, patches: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        size = self.patch_size
        if patches.ndim != 5 or patches.shape[1:] != (self.in_channels, size, size, size):
            raise ValueError(f"DeepNAT expects B×{self.in_channels}×{size}×{size}×{size} patches, got {patches.shape}.")
        return self.classify(self.convolutions(patches).flatten(1), coords)


class DeepNATCascade(nn.Module):
    """DeepNAT's hierarchy as one module: ``stage1`` (foreground/background) and ``stage2`` (the structures).

    Each stage is trained on its own (see :mod:`neurobundles.transforms.patch_sampling`); the cascade is what
    inference loads, so one checkpoint holds both. Whole volumes go through
    :class:`~neurobundles.inferers.DeepNATInferer`; ``forward`` is the cascade at single patches (the Model Zoo's
    and TorchScript's view of the bundle): ``B×(C+coord_channels)×p³`` patches whose last channels are the
    coordinate maps, read at the patch centre, → the hierarchy's class probabilities ``B×K×num_heads``:
    ``P(c) = P₁(fg)·P₂(c)`` for the structures and ``P(bg) = P₁(bg) + P₁(fg)·P₂(bg)``.

    Args:
        stage1: the first network (``out_channels=2``); default a released-size :class:`DeepNAT`.
        stage2: the second network (``out_channels=26``); default a released-size :class:`DeepNAT`.
    """

    def __init__(self, stage1: DeepNAT | None = None, stage2: DeepNAT | None = None) -> None:
        super().__init__()
        self.stage1 = stage1 if stage1 is not None else DeepNAT(out_channels=2)
        self.stage2 = stage2 if stage2 is not None else DeepNAT(out_channels=26)
        if self.stage1.out_channels != 2:
            raise ValueError(
                f"stage 1 separates foreground from background: out_channels must be 2, got {self.stage1.out_channels}."
            )
        for attribute in ("patch_size", "in_channels", "coord_channels", "num_heads"):
            if getattr(self.stage1, attribute) != getattr(self.stage2, attribute):
                raise ValueError(f"the two stages differ in {attribute}.")
        self.image_channels = self.stage1.in_channels

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        image = patches[:, : self.image_channels]
        centre = self.stage1.patch_size // 2
        coords = patches[:, self.image_channels :, centre, centre, centre]
        first = torch.softmax(self.stage1(image, coords), dim=1)
        second = torch.softmax(self.stage2(image, coords), dim=1)
        out = first[:, 1:2] * second
        return torch.cat([out[:, :1] + first[:, :1], out[:, 1:]], dim=1)


def keep_trained_stages(cascade: DeepNATCascade, checkpoint: str | Path) -> DeepNATCascade:
    """Load an earlier run's cascade checkpoint, if there is one, so that training one stage keeps the other's."""
    return load_pretrained(cascade, checkpoint) if Path(checkpoint).is_file() else cascade


@torch.no_grad()
def patch_logits(
    network: DeepNAT,
    image: torch.Tensor,
    coords: torch.Tensor | None,
    centres: torch.Tensor,
    batch_size: int = 256,
) -> torch.Tensor:
    """Reference: logits ``N×K×H`` at ``centres`` by cutting every patch and running the network on it."""
    centres = centres.to(device=image.device, dtype=torch.long)
    _check_centres(centres, image.shape[1:])
    out = []
    for first in range(0, len(centres), batch_size):
        chunk = centres[first : first + batch_size]
        patches = extract_patches(image, chunk, network.patch_size)
        point = None if coords is None else coords[:, chunk[:, 0], chunk[:, 1], chunk[:, 2]].T
        out.append(network(patches, point))
    if not out:
        return image.new_zeros((0, network.out_channels, network.num_heads))
    return torch.cat(out)


def _conv_taps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, last: Sequence[int]) -> torch.Tensor:
    """Valid convolution of ``x`` with only the taps at the kernel's last index along the axes in ``last``.

    The result is aligned with the full convolution: element ``r`` sums ``weight[t]·x[r + t]`` over those taps.
    """
    kernel = weight.shape[2:]
    slices, starts = [], []
    for axis in _AXES:
        start = kernel[axis] - 1 if axis in last else 0
        slices.append(slice(start, kernel[axis]))
        starts.append(start)
    out = F.conv3d(x, weight[(slice(None), slice(None), *slices)], bias)
    full = [x.shape[2 + axis] - kernel[axis] + 1 for axis in _AXES]
    return out[(slice(None), slice(None), *(slice(s, s + n) for s, n in zip(starts, full)))]


def _mobius_(maps: dict[tuple[int, ...], torch.Tensor]) -> None:
    """In place: ``maps[E]`` becomes Δ_E = Σ_{E'⊆E} (−1)^{|E∖E'|} maps[E'] (so that maps[F] = Σ_{E⊆F} Δ_E)."""
    for axis in _AXES:
        for subset in _SUBSETS:
            if axis in subset:
                maps[subset].sub_(maps[tuple(a for a in subset if a != axis)])


def _zeta_(maps: dict[tuple[int, ...], torch.Tensor]) -> None:
    """In place: ``maps[F]`` becomes Σ_{E⊆F} maps[E] (the inverse of :func:`_mobius_`)."""
    for axis in _AXES:
        for subset in _SUBSETS:
            if axis in subset:
                maps[subset].add_(maps[tuple(a for a in subset if a != axis)])


def _folded(conv: nn.Conv3d, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``norm(conv(x))`` as one convolution (batch norm in eval mode is per-channel affine)."""
    weight, bias = conv.weight, conv.bias
    if isinstance(norm, nn.BatchNorm3d):
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        weight = weight * scale[:, None, None, None, None]
        bias = (bias - norm.running_mean) * scale + norm.bias
    return weight.contiguous(), bias


def _edge_convolution(
    inputs: dict[tuple[int, ...], torch.Tensor], weight: torch.Tensor, bias: torch.Tensor, act: nn.Module
) -> dict[tuple[int, ...], torch.Tensor]:
    """One convolution (+ folded norm + activation) of the patch network, densely for every edge pattern.

    ``inputs[E]`` is the input map as seen by patch positions that sit on the *last* block index along the
    axes in ``E`` (for the pooled map: the one-voxel window; later: the outputs that used it). A patch's
    output at block index ``i`` sees, through tap ``t``, the input variant of the axes where both ``i`` and
    ``t`` are last. Writing each variant as a sum of Möbius differences turns this into one full convolution
    plus convolutions of the differences with the kernel's last faces, edges and corner only; the outputs are
    the subset sums of those terms. ``inputs`` is consumed.
    """
    if len(inputs) == 1:
        return {(): _activate_(F.conv3d(inputs[()], weight, bias), act)}
    _mobius_(inputs)
    terms = {}
    for subset in _SUBSETS:
        terms[subset] = _conv_taps(inputs.pop(subset), weight, bias if not subset else None, subset)
    _zeta_(terms)
    return {subset: _activate_(term, act) for subset, term in terms.items()}


def _activate_(x: torch.Tensor, act: nn.Module) -> torch.Tensor:
    """``act(x)``, in place for ReLU."""
    return x.relu_() if isinstance(act, nn.ReLU) else act(x)


@torch.no_grad()
def dense_logits(
    network: DeepNAT,
    image: torch.Tensor,
    coords: torch.Tensor | None,
    centres: torch.Tensor,
    slab: int = 24,
    chunk: int = 8192,
    compute_dtype: torch.dtype | str | None = None,
) -> torch.Tensor:
    """Logits ``N×K×H`` at ``centres`` (``N×3`` voxel indices), equal to :func:`patch_logits` without patches.

    The centres are taken in slabs of ``slab`` voxels along the first axis. For each slab the first
    convolution runs once over the slab's box (plus the patch halo; zeros outside the volume, as the patches
    have). The centres of one *phase* (parity along each axis) share the pooling grid, so per phase the
    pooling and the other two convolutions run once over that grid; the fully connected layers run only at the
    requested centres, as a gather of each centre's 3³ block and a matrix product.

    Caffe's rounded-up pooling makes the last pooling window of a patch (along an axis) a single voxel, so a
    patch's block is not a plain crop of one translation-invariant map. The pooled map is therefore computed for
    every subset of axes on which the window is a single voxel (8 variants), and every later convolution for
    every subset of axes on which its output sits at the block's last index; Möbius differences keep the extra
    cost to the kernels' last faces (conv2 ×1.7, conv3 ×2.4 the plain cost). Memory stays within about 1 GB
    per slab at 256³ with the released widths.

    Args:
        network: a :class:`DeepNAT` in eval mode.
        image: ``C×X×Y×Z`` intensities (no batch dimension).
        coords: ``coord_channels×X×Y×Z`` coordinate maps (read at the centres), or ``None`` without coordinates.
        centres: ``N×3`` integer voxel indices inside the volume.
        slab: slab thickness in voxels along the first axis (memory ∝ slab).
        chunk: centres per matrix product of the fully connected stage.
        compute_dtype: ``None`` (float32, equal to the per-patch network) or ``"bfloat16"``/``"float16"``:
            autocast the convolutions and matrix products (several times faster on CPUs with AMX/AVX-512 BF16
            and on GPUs; the class probabilities then differ from float32 by about 1 %).
    """
    if network.training:
        raise RuntimeError("dense_logits needs the network in eval mode (batch norm from running statistics).")
    if image.ndim != 4 or image.shape[0] != network.in_channels:
        raise ValueError(f"image must be {network.in_channels}×X×Y×Z, got {tuple(image.shape)}.")
    centres = centres.to(device=image.device, dtype=torch.long)
    _check_centres(centres, image.shape[1:])
    out = image.new_empty((len(centres), network.out_channels, network.num_heads))
    if len(centres) == 0:
        return out
    folded = (_folded(network.conv2, network.norm2), _folded(network.conv3, network.norm3))
    block = network.block_size
    fc1_weight = network.fc1.weight  # f1 × (C·b³), C-major like ``flatten`` of the block → position-major
    fc1_weight = fc1_weight.view(len(fc1_weight), -1, block**3).transpose(1, 2).reshape(len(fc1_weight), -1)
    slab = max(2, int(slab))
    if isinstance(compute_dtype, str):
        compute_dtype = getattr(torch, compute_dtype)
    autocast = torch.autocast(
        image.device.type, dtype=compute_dtype or torch.float32, enabled=compute_dtype is not None
    )
    with autocast:
        _slabs(network, image, coords, centres, slab, chunk, out, folded, fc1_weight)
    return out


def _slabs(
    network: DeepNAT,
    image: torch.Tensor,
    coords: torch.Tensor | None,
    centres: torch.Tensor,
    slab: int,
    chunk: int,
    out: torch.Tensor,
    folded: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    fc1_weight: torch.Tensor,
) -> None:
    """The slab loop of :func:`dense_logits`, writing each centre's logits into ``out``."""
    half = network.patch_size // 2
    half1 = (network.conv1_size - 1) // 2
    first = int(centres[:, 0].min())
    for start in range(first, int(centres[:, 0].max()) + 1, slab):
        rows = torch.nonzero((centres[:, 0] >= start) & (centres[:, 0] < start + slab)).squeeze(1)
        if len(rows) == 0:
            continue
        inside = centres[rows]
        low = inside.min(0).values
        high = inside.max(0).values
        crop = _crop(image, low - half, high + half)[None].contiguous(memory_format=torch.channels_last_3d)
        conv1 = network.act(network.conv1(crop))  # starts at low − half1 (absolute)
        for phase in itertools.product((0, 1), repeat=3):
            parity = torch.tensor(phase, device=image.device)
            selected = ((inside - low) % 2 == parity).all(1)
            if not selected.any():
                continue
            points = inside[selected]
            grid = (points - low - parity) // 2  # the phase's pooling grid, one step per 2 voxels
            grid_low = grid.min(0).values
            logits = _phase_logits(
                network, conv1, parity, grid - grid_low, grid_low, half1, coords, points, chunk, folded, fc1_weight
            )
            out[rows[selected]] = logits.to(out.dtype)


def _check_centres(centres: torch.Tensor, shape: Sequence[int]) -> None:
    if centres.ndim != 2 or centres.shape[1] != 3:
        raise ValueError(f"centres must be N×3 voxel indices, got shape {tuple(centres.shape)}.")
    if len(centres) and (
        bool((centres < 0).any()) or bool((centres >= torch.tensor(shape, device=centres.device)).any())
    ):
        raise ValueError(f"centres must lie inside the volume of shape {tuple(shape)}.")


def _crop(image: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``image[:, low:high+1]`` per axis, zero-padded where the box leaves the volume."""
    shape = torch.tensor(image.shape[1:], device=low.device)
    pad_low = (-low).clamp(min=0)
    pad_high = (high + 1 - shape).clamp(min=0)
    a, b = (low + pad_low).tolist(), (high + 1 - pad_high).tolist()
    out = image[:, a[0] : b[0], a[1] : b[1], a[2] : b[2]]
    pads = []
    for axis in (2, 1, 0):
        pads += [int(pad_low[axis]), int(pad_high[axis])]
    return F.pad(out, pads) if any(pads) else out


def _pool_variants(region: torch.Tensor, variants: bool) -> dict[tuple[int, ...], torch.Tensor]:
    """2×2×2 max pooling, stride 2, of ``1×C×L0×L1×L2`` (even lengths), for every subset E of axes along which
    the window is a single voxel instead (the first of the pair); only E = () unless ``variants``.

    Built axis by axis from strided views and pairwise maxima: 1.5 passes over the data for all eight variants.
    """
    level: dict[tuple[int, ...], torch.Tensor] = {(): region}
    for axis in _AXES:
        step = []
        for subset, x in level.items():
            first = x[(slice(None),) * (2 + axis) + (slice(0, None, 2),)]
            second = x[(slice(None),) * (2 + axis) + (slice(1, None, 2),)]
            step.append(((*subset,), torch.maximum(first, second)))
            if variants:
                step.append(((*subset, axis), first))
        level = dict(step)
    # own storage in channels-last: the maps are changed in place later and views would reach into conv1
    return {
        subset: level[subset].contiguous(memory_format=torch.channels_last_3d)
        for subset in (_SUBSETS if variants else ((),))
    }


def _phase_logits(
    network: DeepNAT,
    conv1: torch.Tensor,
    parity: torch.Tensor,
    grid: torch.Tensor,
    grid_low: torch.Tensor,
    half1: int,
    coords: torch.Tensor | None,
    points: torch.Tensor,
    chunk: int,
    folded: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    fc1_weight: torch.Tensor,
) -> torch.Tensor:
    """Logits of the centres of one pooling phase (``grid``: their positions on the phase grid, from 0)."""
    pooled, block = network.pooled_size, network.block_size
    extent = grid.max(0).values + 1  # phase-grid positions with a centre, per axis
    # pooled element m of centre q covers conv1 voxels parity + 2·(grid_low + q + m) + {0, 1} (conv1's own index)
    begin = parity + 2 * grid_low
    length = 2 * (extent + pooled - 1)
    region = conv1[0, :, begin[0] :, begin[1] :, begin[2] :][:, : length[0], : length[1], : length[2]]
    missing = [int(n - s) for n, s in zip(length.tolist(), region.shape[1:])]
    if any(missing):  # only pooling windows that no patch uses reach past the map
        region = F.pad(region, (0, missing[2], 0, missing[1], 0, missing[0]))
    pooled_maps = _pool_variants(region[None], network.single_last_window)
    maps = _edge_convolution(pooled_maps, *folded[0], network.act)
    maps = _edge_convolution(maps, *folded[1], network.act)
    # every block position k reads the variant of the axes where k is last: rows of one channels-last table
    variants = list(maps)
    first_map = maps[variants[0]]
    sizes = first_map.shape[2:]
    table = first_map.new_empty((len(variants), *sizes, first_map.shape[1]))
    for index, subset in enumerate(variants):
        table[index].copy_(maps.pop(subset)[0].permute(1, 2, 3, 0))
    table = table.view(-1, table.shape[-1])
    positions = list(itertools.product(range(block), repeat=3))
    variant_of = [
        variants.index(tuple(a for a in _AXES if k[a] == block - 1)) if len(variants) > 1 else 0 for k in positions
    ]
    base = torch.tensor(
        [((v * sizes[0] + k[0]) * sizes[1] + k[1]) * sizes[2] + k[2] for v, k in zip(variant_of, positions)],
        device=grid.device,
    )
    head = []
    for first in range(0, len(grid), chunk):
        at = grid[first : first + chunk]
        rows = ((at[:, 0] * sizes[1] + at[:, 1]) * sizes[2] + at[:, 2])[:, None] + base  # n × b³
        features = table.index_select(0, rows.reshape(-1)).view(len(at), -1)  # n × (b³·C), position-major
        hidden = network.dropout(network.act(F.linear(features.flatten(1), fc1_weight, network.fc1.bias)))
        x = hidden
        if network.coord_channels:
            if coords is None:
                raise ValueError(f"the network expects {network.coord_channels} coordinate maps; got none.")
            p = points[first : first + chunk]
            x = torch.cat([hidden, coords[:, p[:, 0], p[:, 1], p[:, 2]].T.to(hidden.dtype)], dim=1)
        x = network.dropout(network.act(network.norm_fc2(network.fc2(x))))
        head.append(network.heads(x).view(-1, network.num_heads, network.out_channels).transpose(1, 2))
    return torch.cat(head)
