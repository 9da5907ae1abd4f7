"""Run a fully convolutional network on the whole volume at once, in the fastest safe form per device."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from neurobundles.inferers import cpu_kernel

__all__ = ["FullVolumeInferer"]

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
    """

    def __init__(
        self,
        compiled: bool | None = None,
        channels_last: bool | None = None,
        amp: bool | None = None,
        amp_dtype: str = "float16",
        argmax: bool = False,
        head_chunk: int = 32,
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

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        values = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        out = self._compiled(values, network) if not args and not kwargs else None
        if out is None:
            out = self._torch(values, network, *args, **kwargs)
        out = out.contiguous()
        if isinstance(inputs, MetaTensor):
            return MetaTensor(out, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return out

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

    def _torch(self, values: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        device_type = values.device.type
        channels_last = device_type == "cpu" if self.channels_last is None else self.channels_last
        amp = device_type == "cuda" if self.amp is None else self.amp
        with _memory_format(network, channels_last and values.ndim == 5):
            if channels_last and values.ndim == 5:
                values = values.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(device_type, dtype=self.amp_dtype, enabled=amp):
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


def _pointwise_head(head: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A head that is one 1×1×1 convolution, as a matrix product over channels (``einsum``).

    PyTorch's CPU convolution spends 0.11 s per 32 slices of 256² on a 5→3 channel 1×1×1 convolution that
    ``einsum`` does in 0.02 s, in either memory layout: the head would cost as much as MeshNet's layers.
    """
    leaves = [m for m in head.modules() if not list(m.children())]
    if len(leaves) != 1 or not isinstance(leaves[0], nn.Conv3d):
        return None
    conv = leaves[0]
    if conv.kernel_size != (1, 1, 1) or conv.stride != (1, 1, 1) or conv.groups != 1 or conv.padding != (0, 0, 0):
        return None

    def logits(features: torch.Tensor) -> torch.Tensor:
        weight = conv.weight.reshape(conv.out_channels, conv.in_channels).to(features.dtype)
        out = torch.einsum("oc,bc...->bo...", weight, features)
        return out if conv.bias is None else out + conv.bias.to(out.dtype).view(1, -1, 1, 1, 1)

    return logits


def _labels(logits: torch.Tensor) -> torch.Tensor:
    """Class index per voxel; ``Tensor.max(dim).indices`` equals ``torch.argmax`` without its slow strided CPU path."""
    return logits.max(dim=1, keepdim=True).indices.float()
