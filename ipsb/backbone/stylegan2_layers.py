"""StyleGAN2 building blocks in plain PyTorch, named and laid out like rosinality's ``model.py``.

Every module here keeps rosinality's parameter/buffer names and shapes, so a ``g_ema`` state dict
loads strictly into :class:`ipsb.backbone.stylegan2.StyleGAN2Generator`.

Why hand-written: rosinality and NVlabs ship ``upfirdn2d`` / ``fused_leaky_relu`` as CUDA extensions
compiled at import time (their most common failure). The same maths is a few lines of ``F.pad`` and
``F.conv2d`` here, runs on any device, works under ``torch.compile`` and ``torch.func`` (no in-place
ops on inputs, no ``.item()``, no custom ``autograd.Function``), and stays numerically the reference's
own CPU path (zero insertion, padding/cropping, a true convolution with the flipped FIR kernel).

Modulated convolutions use the "shared weight" form (modulate the input, convolve with the common
weight, demodulate the output), which NVlabs calls ``fused_modconv=False``. It equals rosinality's
grouped-conv form up to float rounding (<= 2e-6 of max|image| in the fixtures) and is the cheaper one
for batched, vmapped and compiled calls.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def make_fir_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Separable FIR taps ``[k]`` -> normalised 2-D kernel ``[k,k]`` (sum = ``gain``)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = k[None, :] * k[:, None]
    return k2 / k2.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), FIR-filter, downsample.

    x ``[B,C,H,W]``; kernel ``[kh,kw]`` (applied as a true convolution, i.e. flipped, per channel);
    ``pad = (p0, p1)`` on both axes. Output ``[B,C,(H*up+p0+p1-kh)//down+1, ...]``.
    """
    b, c, h, w = x.shape
    p0, p1 = pad
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0):x.shape[2] - max(-p1, 0), max(-p0, 0):x.shape[3] - max(-p1, 0)]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = SQRT2, clamp: Optional[float] = None) -> torch.Tensor:
    """``leaky_relu(x + bias) * scale`` (bias over dim 1), then optional clamp to ``[-clamp, clamp]``."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    out = F.leaky_relu(x + bias.reshape(shape), negative_slope) * scale
    if clamp is not None:
        out = out.clamp(-clamp, clamp)
    return out


class PixelNorm(nn.Module):
    """x ``[B,D]`` -> ``x / sqrt(mean(x^2) + 1e-8)`` over dim 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Equalized-lr linear layer: ``weight [out,in]`` times ``lr_mul/sqrt(in)``, ``bias`` times ``lr_mul``.

    With ``activation`` the output is ``fused_leaky_relu`` (slope 0.2, gain sqrt 2).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = 1.0 / math.sqrt(in_dim) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        bias = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.scale, bias)


class Blur(nn.Module):
    """FIR low-pass with padding; ``kernel [k,k]`` buffer stores the taps times ``upsample_factor**2``."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(taps, upsample_factor ** 2))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the skip image; ``kernel [k,k]`` buffer holds the taps times ``factor**2``."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_fir_kernel(taps, factor ** 2))
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution. x ``[B,I,H,W]``, style ``[B,w_dim]`` -> ``[B,O,H',W']``.

    ``weight [1,O,I,k,k]``; ``modulation`` (EqualLinear w_dim -> I, bias 1) gives per-input scales;
    with ``demodulate`` each output channel is renormalised; ``upsample`` doubles H, W
    (transposed conv stride 2 + :class:`Blur`).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        weight = self.weight[0]                                    # [O,I,k,k]
        s = self.modulation(style) * self.scale                    # [B,I], equalized-lr scale folded in
        x = x * s.reshape(b, self.in_channel, 1, 1)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            out = self.blur(out)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,kh,kw} (W[o,i] s[i])^2 = sum_i s[i]^2 sum_k W[o,i,k]^2: [B,I] @ [I,O]
            dcoefs = torch.rsqrt(F.linear(s.square(), weight.square().sum(dim=(2, 3))) + 1e-8)  # [B,O]
            out = out * dcoefs.reshape(b, self.out_channel, 1, 1)
        return out


class NoiseInjection(nn.Module):
    """x ``[B,C,H,W]`` + ``weight [1]`` * noise ``[1 or B,1,H,W]`` (no-op when noise is None)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Bias ``[C]`` + leaky ReLU 0.2 + gain sqrt 2 (+ optional clamp), as a module with a ``bias``."""

    def __init__(self, channels: int, clamp: Optional[float] = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, clamp=self.clamp)


class StyledConv(nn.Module):
    """ModulatedConv2d -> noise -> FusedLeakyReLU. x ``[B,I,H,W]`` -> ``[B,O,H or 2H,W or 2W]``.

    ``clamp``: optional clamp after the activation gain (NVlabs ``conv_clamp``).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 clamp: Optional[float] = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel, clamp=clamp)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB + ``bias [1,3,1,1]``, plus the upsampled skip image.

    ``clamp`` (NVlabs ``conv_clamp``) applies to this layer's own output, before the skip is added.
    """

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), clamp: Optional[float] = None):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 input ``input [1,C,4,4]``, repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)
