"""Work-arounds for PyTorch's CPU kernels, measured on the project's CPUs (docs/performance.md):
which convolution kernel a single volume gets, how bfloat16 is upsampled, the fusion head computed
in cache-sized slabs, and where bfloat16 runs in hardware. The networks (networks.py) use these;
they compute the same results as the plain PyTorch calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.aten, "mkldnn_convolution")


def _onednn_bfloat16() -> bool:
    """Whether oneDNN's bfloat16 convolution runs on this CPU: it needs AVX512-BW/VL/DQ or
    AVX-NE-CONVERT and refuses elsewhere (an AMD EPYC with AVX2 only); PyTorch's own kernel then
    computes bfloat16, slowly but right."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_DTYPES = (torch.float32, torch.bfloat16) if _MKLDNN and _onednn_bfloat16() else (torch.float32,)
SLAB_VOXELS = 1 << 19  # full-resolution voxels per slab of the fusion head at inference (32 x 128 x 128)


class Conv3d(nn.Conv3d):
    """nn.Conv3d that keeps oneDNN for single volumes at inference.

    PyTorch's CPU backend choice sends a batch of one with N*C*D*H <= 20480 (a typical
    half-resolution ROI at width 16) to its slow native kernel, about 14 times slower than
    oneDNN on the same input. Without gradients we call the oneDNN kernel directly; training
    (batches of two, channels-last) keeps the regular dispatch and its backward. The same holds
    for bfloat16 inference. A trace (an ONNX export) records the regular convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (_MKLDNN and not torch.is_grad_enabled() and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
                and x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES):
            if not x.is_contiguous(memory_format=torch.channels_last_3d):
                x = x.contiguous()
            return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, self.padding,
                                                     self.stride, self.dilation, self.groups)
        return super().forward(x)


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Trilinear upsampling; on the CPU bfloat16 goes through float32, whose kernel is faster (the
    result is rounded to bfloat16 either way). The channels-last kernel vectorises over channels:
    for a few channels (the confidence head's two maps) the NCDHW one is 2-2.4 times faster at
    96³-128³, for 8 and more channels-last is (docs/performance.md)."""
    if x.shape[1] < 8:
        x = x.contiguous()
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return F.interpolate(x.float(), size=size, mode="trilinear", align_corners=False).to(torch.bfloat16)
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def fuse_in_slabs(fuse: Callable, coarse: torch.Tensor, inputs: torch.Tensor, out_channels: int) -> torch.Tensor:
    """networks.FusionHead's ``fuse(upsample(coarse), inputs)`` computed a slab of rows (first
    spatial axis) at a time, so the full-resolution tensors between the upsampling and the output
    stay in the CPU's cache instead of streaming through memory (a third less time for this head
    at 128³, docs/performance.md). Each slab takes one row of halo either side for the 3x3x3
    convolution and one coarse row either side for the upsampling; with the exact factor 2 along
    the slab axis (checked by the caller) a slab's trilinear weights are the whole volume's, so the
    result is identical."""
    depth, plane = inputs.shape[2], inputs.shape[3:]
    rows = max(2, SLAB_VOXELS // plane.numel())
    out = torch.empty((inputs.shape[0], out_channels, depth, *plane), dtype=inputs.dtype,
                      device=inputs.device, memory_format=torch.channels_last_3d)
    for start in range(0, depth, rows):
        stop = min(depth, start + rows)
        coarse_start, coarse_stop = max(start // 2 - 1, 0), min((stop + 1) // 2 + 1, coarse.shape[2])
        upsampled = upsample(coarse[:, :, coarse_start:coarse_stop], (2 * (coarse_stop - coarse_start), *plane))
        halo_start, halo_stop = max(start - 1, 0), min(stop + 1, depth)
        offset = 2 * coarse_start  # the global row of upsampled[:, :, 0]
        fused = fuse(upsampled[:, :, halo_start - offset:halo_stop - offset], inputs[:, :, halo_start:halo_stop])
        out[:, :, start:stop] = fused[:, :, start - halo_start:stop - halo_start]
    return out


def native_bfloat16(device: torch.device) -> bool:
    """True where bfloat16 convolutions run in hardware (AVX512-BF16/AMX CPUs, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: stay with float32 rather than guess
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
