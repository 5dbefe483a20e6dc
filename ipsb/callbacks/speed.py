"""GPU speed switches that Lightning has no Trainer flag for, as one callback for ``trainer.callbacks``.

bf16 is Lightning's own switch and not repeated here: ``trainer.precision: bf16-mixed`` runs every
step (synthesis, the metric networks, the losses' inputs) under ``torch.autocast`` in bfloat16,
which keeps float32 for the ops autocast lists as precision-sensitive (reductions, norms, the
``*_loss`` functions, ``cosine_similarity``, ...). What ipsb itself keeps in float32/float64 under it:
the basis accumulators and eigensolver (float64, outside the step), and optimizer state (Lightning
keeps float32 master weights with ``bf16-mixed``). Tolerances against float32, measured on CPU by
``tests/cuda/test_speed_switches.py``, are stated there and in ``docs/scaling.md``.

:class:`SpeedSwitches` (all off by default):

* ``channels_last``: every 4-D weight of the LightningModule in NHWC memory format
  (:func:`to_channels_last`), and every
  :class:`~ipsb.backbone.stylegan2.StyleGAN2Generator`'s synthesis activations too
  (:meth:`~ipsb.backbone.stylegan2.StyleGAN2Generator.use_channels_last`): cuDNN's fast layout for
  bf16 / TF32 convolutions. Same results up to float rounding.
* ``compile_synthesis``: ``torch.compile`` of every StyleGAN2 generator's synthesis
  (:meth:`~ipsb.backbone.stylegan2.StyleGAN2Generator.compile_synthesis`). Same results up to float
  rounding; the first step compiles.
* ``tf32``: ``True`` lets float32 matmuls and cuDNN convolutions use TF32 on Ampere and newer GPUs
  (``torch.set_float32_matmul_precision("high")``, ``torch.backends.cudnn.allow_tf32``), ``False``
  forbids both (full float32, e.g. for a basis that must match a CPU run), ``None`` leaves
  PyTorch's defaults (TF32 convolutions, float32 matmuls). TF32 keeps 10 mantissa bits: about 1e-3
  relative error per product. No effect on CPU.

The previous global settings are restored when the run ends (``teardown``).
"""
from __future__ import annotations

from typing import Optional

import torch
from lightning.pytorch import Callback


class SpeedSwitches(Callback):
    """Apply the speed switches of the module docstring for the length of a run.

    Args:
        channels_last: NHWC weights and StyleGAN2 activations.
        compile_synthesis: ``torch.compile`` StyleGAN2 synthesis.
        compile_options: keyword arguments of ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``).
        tf32: allow (True) or forbid (False) TF32 matmuls and convolutions; None leaves the defaults.
    """

    def __init__(self, channels_last: bool = False, compile_synthesis: bool = False,
                 compile_options: Optional[dict] = None, tf32: Optional[bool] = None):
        self.channels_last, self.compile_synthesis = bool(channels_last), bool(compile_synthesis)
        self.compile_options = dict(compile_options or {})
        self.tf32 = tf32
        self._saved: Optional[tuple] = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        from ipsb.backbone.stylegan2 import StyleGAN2Generator

        if self.tf32 is not None and self._saved is None:
            self._saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
            torch.set_float32_matmul_precision("high" if self.tf32 else "highest")
            torch.backends.cudnn.allow_tf32 = bool(self.tf32)
        if self.channels_last:
            to_channels_last(pl_module)
        for module in pl_module.modules():
            if isinstance(module, StyleGAN2Generator):
                if self.channels_last:
                    module.use_channels_last()
                if self.compile_synthesis:
                    module.compile_synthesis(**self.compile_options)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._saved is not None:
            torch.set_float32_matmul_precision(self._saved[0])
            torch.backends.cudnn.allow_tf32 = self._saved[1]
            self._saved = None


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Every 4-D parameter and buffer of ``module`` in channels-last memory format, in place.

    Not ``module.to(memory_format=...)``: that also converts 5-D tensors, which fails for
    channels-last (StyleGAN2 keeps its modulated convolution weights as ``[1,O,I,k,k]``)."""
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
        for name, buf in sub.named_buffers(recurse=False):
            if buf is not None and buf.dim() == 4:
                setattr(sub, name, buf.contiguous(memory_format=torch.channels_last))
    return module
