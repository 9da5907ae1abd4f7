"""Run a fully convolutional network on the whole volume at once, in the fastest safe form per device."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from neurobundles.inferers import cpu_kernel, winograd
from neurobundles.inferers.precision import PATHS, choose_path

__all__ = ["FullVolumeInferer"]

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class FullVolumeInferer(Inferer):
    """One forward pass over the whole (conformed) volume; outputs float32 logits or class indices.

    MeshNet keeps full resolution in every layer, so there is nothing to gain from windows when
    the volume fits in memory. The device policy is chosen per call from the input's device:

    Args:
        compiled: on CPU, run MeshNet's dilated layers through the compiled direct-convolution
            kernel (:mod:`neurobundles.inferers.cpu_kernel`; 3× oneDNN channels-last for the 5-channel
            tissue model). ``None``: where it applies and pays (CPU, fp32 inference, a C compiler, a
            MeshNet-like ``features`` no wider than ``cpu_kernel.NARROW`` channels), else PyTorch;
            ``True``: insist (error otherwise); ``False``: never.
        channels_last: use ``torch.channels_last_3d`` (``None``: on CPU only, where oneDNN's
            dilated convolutions run about 2.7× faster in that layout than in the default one).
        amp: autocast to ``amp_dtype`` (``None``: on CUDA only).
        amp_dtype: ``"float16"`` or ``"bfloat16"``.
        argmax: return the class index per voxel (``B×1×…``, float32) instead of logits. For a
            network with a pointwise ``head`` after its ``features`` (``MeshNet``), the head and the
            argmax run ``head_chunk`` slices at a time, so C-channel logits never exist in full
            (7 GB for 104 classes at 256³).
        head_chunk: slices along the first spatial axis per head-and-argmax step.
        precision: the CPU inference path (:mod:`neurobundles.inferers.precision`): ``"auto"`` picks the
            fastest path in ``measured_paths`` that runs here and whose labels agreed with fp32 on at least
            99.9 % of voxels, else fp32; ``"fp32"`` forces exact fp32; ``"winograd"`` or ``"bf16"`` force
            that path. Used when ``compiled`` and ``amp`` are left at ``None``; printed once per inferer.
        measured_paths: per faster path, ``{"agreement": fraction, "speedup": {cpu_class: ×}}`` as measured
            for the bundle by ``python -m neurobundles.bench``.
    """

    def __init__(
        self,
        compiled: bool | None = None,
        channels_last: bool | None = None,
        amp: bool | None = None,
        amp_dtype: str = "float16",
        argmax: bool = False,
        head_chunk: int = 32,
        precision: str = "auto",
        measured_paths: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if amp_dtype not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(_AMP_DTYPES)}, got {amp_dtype!r}.")
        self.compiled = compiled
        self.channels_last = channels_last
        self.amp = amp
        self.amp_dtype = _AMP_DTYPES[amp_dtype]
        self.argmax = argmax
        self.head_chunk = head_chunk
        self.precision = precision
        self.measured_paths = dict(measured_paths or {})
        self._announced = False
        if precision not in {"auto", *PATHS}:
            raise ValueError(f"precision must be 'auto' or one of {sorted(PATHS)}, got {precision!r}.")

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        values = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        path = self._cpu_path(values, network) if not args and not kwargs else None
        out = None
        if path == "winograd":
            out = self._winograd(values, network)
        elif path == "bf16":
            out = self._torch(values, network, amp=True, amp_dtype=torch.bfloat16)
        elif not args and not kwargs:
            out = self._compiled(values, network)
        if out is None:
            out = self._torch(values, network, *args, **kwargs)
        out = out.contiguous()
        if isinstance(inputs, MetaTensor):
            return MetaTensor(out, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return out

    def _cpu_path(self, values: torch.Tensor, network: nn.Module) -> str | None:
        """The precision policy's path for CPU inference (``None`` where the explicit settings decide)."""
        training = network.training or (torch.is_grad_enabled() and values.requires_grad)
        if values.device.type != "cpu" or training or self.amp is not None or self.compiled is not None:
            return None
        path, reason = choose_path(self.precision, self.measured_paths, network)
        if not self._announced:
            logger.info(f"CPU inference path: {reason}")
            self._announced = True
        return path

    def _winograd(self, values: torch.Tensor, network: nn.Module) -> torch.Tensor:
        features = winograd.winograd_features(network, values)
        if features is None:
            raise RuntimeError("the Winograd path could not run (no C compiler?); use precision='fp32'.")
        if self.argmax:
            conv = _pointwise_conv(network.head)
            labels = winograd.head_argmax(features, conv) if conv is not None else None
            return labels if labels is not None else self._chunked_argmax(network, features)
        head = _pointwise_head(network.head)
        return (head(features) if head else network.head(features.contiguous())).float()

    def _compiled(self, values: torch.Tensor, network: nn.Module) -> torch.Tensor | None:
        """The compiled-kernel path, or ``None`` where it does not apply (and was not insisted on)."""
        amp = values.device.type == "cuda" if self.amp is None else self.amp
        training = network.training or (torch.is_grad_enabled() and values.requires_grad)
        if self.compiled is False:
            return None
        if self.compiled is None and (values.device.type != "cpu" or amp or training or not cpu_kernel.pays(network)):
            return None
        features = None if training else cpu_kernel.compiled_features(network, values)
        if features is None:
            if self.compiled:
                raise RuntimeError(
                    "compiled=True needs inference (network.eval(), no gradients), a CPU float32 input, a MeshNet-like "
                    "network (3×3×3 'same' dilated convolutions in `features`) and a working C compiler ($CC or cc); "
                    "use compiled=None to fall back."
                )
            return None
        if self.argmax:
            return self._chunked_argmax(network, features)
        head = _pointwise_head(network.head)
        return (head(features) if head else network.head(features)).float()

    def _torch(
        self,
        values: torch.Tensor,
        network: nn.Module,
        *args: Any,
        amp: bool | None = None,
        amp_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        device_type = values.device.type
        channels_last = device_type == "cpu" if self.channels_last is None else self.channels_last
        amp = (device_type == "cuda" if self.amp is None else self.amp) if amp is None else amp
        with _memory_format(network, channels_last and values.ndim == 5):
            if channels_last and values.ndim == 5:
                values = values.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(device_type, dtype=amp_dtype or self.amp_dtype, enabled=amp):
                if self.argmax and hasattr(network, "features") and hasattr(network, "head"):
                    return self._chunked_argmax(network, network.features(values, *args, **kwargs))
                if self.argmax:
                    return _labels(network(values, *args, **kwargs))
                return network(values, *args, **kwargs).float()

    def _chunked_argmax(self, network: nn.Module, features: torch.Tensor) -> torch.Tensor:
        out = torch.empty((features.shape[0], 1, *features.shape[2:]), dtype=torch.float32, device=features.device)
        head = _pointwise_head(network.head)
        for start in range(0, features.shape[2], self.head_chunk):
            part = features[:, :, start : start + self.head_chunk]
            out[:, :, start : start + self.head_chunk] = _labels(head(part) if head else network.head(part))
        return out


@contextmanager
def _memory_format(network: nn.Module, channels_last: bool) -> Iterator[None]:
    """Run ``network`` with channels-last 3D weights, and leave the caller's network as it was afterwards.

    Converting MeshNet's weights costs microseconds; a network that stays converted surprises its owner
    (a training loop, a benchmark's baseline).
    """
    weights = [p for p in network.parameters() if p.ndim == 5]
    converted = [p for p in weights if not p.is_contiguous(memory_format=torch.channels_last_3d)]
    if not channels_last or not converted:
        yield
        return
    network.to(memory_format=torch.channels_last_3d)
    try:
        yield
    finally:
        with torch.no_grad():
            for parameter in converted:
                parameter.data = parameter.data.contiguous()


def _pointwise_conv(head: nn.Module) -> nn.Conv3d | None:
    """The head's only module if it is a plain 1×1×1 convolution, else ``None``."""
    leaves = [m for m in head.modules() if not list(m.children())]
    if len(leaves) != 1 or not isinstance(leaves[0], nn.Conv3d):
        return None
    conv = leaves[0]
    if conv.kernel_size != (1, 1, 1) or conv.stride != (1, 1, 1) or conv.groups != 1 or conv.padding != (0, 0, 0):
        return None
    return conv


def _pointwise_head(head: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A head that is one 1×1×1 convolution, as a matrix product over channels (``einsum``).

    PyTorch's CPU convolution spends 0.11 s per 32 slices of 256² on a 5→3 channel 1×1×1 convolution that
    ``einsum`` does in 0.02 s, in either memory layout: the head would cost as much as MeshNet's layers.
    """
    conv = _pointwise_conv(head)
    if conv is None:
        return None

    def logits(features: torch.Tensor) -> torch.Tensor:
        weight = conv.weight.reshape(conv.out_channels, conv.in_channels).to(features.dtype)
        if features.stride(1) == 1 and features.shape[1] > 1:  # channels-last: one strided matrix product
            out = torch.matmul(features.movedim(1, -1), weight.t())
            return (out if conv.bias is None else out.add_(conv.bias.to(out.dtype))).movedim(-1, 1)
        out = torch.einsum("oc,bc...->bo...", weight, features)
        return out if conv.bias is None else out + conv.bias.to(out.dtype).view(1, -1, 1, 1, 1)

    return logits


def _labels(logits: torch.Tensor) -> torch.Tensor:
    """Class index per voxel; ``Tensor.max(dim).indices`` equals ``torch.argmax`` without its slow strided CPU path."""
    return logits.max(dim=1, keepdim=True).indices.float()
