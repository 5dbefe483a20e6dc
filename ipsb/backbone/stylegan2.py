"""StyleGAN2 generator (config-f architecture) with a W+ interface, and the rosinality loader.

:class:`StyleGAN2Generator`'s ``state_dict()`` has exactly the keys and shapes of rosinality's
``Generator`` (``style.*``, ``input.input``, ``conv1.*``, ``to_rgb1.*``, ``convs.*``, ``to_rgbs.*``,
``noises.noise_i`` and the FIR ``*.kernel`` buffers), so ``ckpt['g_ema']`` of the official
``stylegan2-ffhq-config-f.pt`` loads strictly. NVlabs checkpoints are converted to this layout by
:mod:`ipsb.backbone.stylegan2_nvlabs`.

Plain PyTorch only (layers in :mod:`ipsb.backbone.stylegan2_layers`): runs on CPU and CUDA, under
``torch.compile``, and under ``torch.func`` transforms (``jacrev``/``vmap``/``jvp`` over W+): the
forward has no in-place ops on inputs, no ``.item()`` and no data-dependent Python control flow.

W+ row use (rosinality == NVlabs): ``conv1`` row 0, ``to_rgb1`` row 1, and for the block at
resolution ``2**(k+3)``: ``convs[2k]`` row 2k+1, ``convs[2k+1]`` row 2k+2, ``to_rgbs[k]`` row 2k+3.

Speed switches (off by default; :class:`ipsb.callbacks.speed.SpeedSwitches` sets them from a config):
:meth:`StyleGAN2Generator.use_channels_last` keeps the synthesis activations in NHWC memory format
(cuDNN's fast layout for bf16/TF32 convolutions), :meth:`StyleGAN2Generator.compile_synthesis` runs
synthesis through ``torch.compile``. bf16 needs no switch here: ``torch.autocast`` (Lightning's
``trainer.precision: bf16-mixed``) covers every op of the forward.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
from torch import nn

from ipsb.backbone.interfaces import FeatureModulator, Generator
from ipsb.backbone.stylegan2_layers import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB

NOISE_MODES = ("const", "random", "none")
#: ``torch.compile`` of :meth:`StyleGAN2Generator._synthesize` per set of compile options (shared by
#: all generators; dynamo guards re-specialise it per instance).
_COMPILED: dict = {}


def channel_table(resolution: int, channel_multiplier: int = 2, channel_base: Optional[int] = None,
                  channel_max: int = 512) -> dict[int, int]:
    """Feature channels per resolution (4 .. resolution).

    Without ``channel_base``: rosinality's table (512 up to 32 px, then ``256m, 128m, 64m, 32m, 16m``
    at 64 .. 1024 for multiplier ``m``). With it: NVlabs' ``min(channel_base // res, channel_max)``
    (``channel_base = 16384 * m`` gives the same table for resolutions >= 64 px).
    """
    res = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
    if channel_base is not None:
        return {r: min(channel_base // r, channel_max) for r in res}
    m = channel_multiplier
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m,
             512: 32 * m, 1024: 16 * m, 2048: 8 * m}
    return {r: min(table[r], channel_max) for r in res}


class StyleGAN2Generator(Generator):
    """StyleGAN2 generator (mapping + synthesis) in plain PyTorch.

    Args:
        resolution: output side (power of two, >= 8). ``num_ws = 2*log2(resolution) - 2``.
        w_dim: width of z, w and every W+ row.
        n_mlp: mapping layers. ``lr_mlp``: their learning-rate multiplier (0.01 in config-f).
        channel_multiplier / channel_base / channel_max: channel widths (see :func:`channel_table`);
            e.g. ``channel_base=512, channel_max=16`` gives a tiny 16-channel generator.
        conv_clamp: optional clamp of every conv/ToRGB output (NVlabs ``conv_clamp``; None = off,
            as in rosinality and TF-converted checkpoints).

    Images ``[B,3,R,R]`` in about [-1,1] (real checkpoints); W+ ``[B,num_ws,w_dim]``.
    """

    def __init__(self, resolution: int, w_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channel_base: Optional[int] = None, channel_max: int = 512, lr_mlp: float = 0.01,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        log_size = int(math.log2(resolution))
        if resolution < 8 or 2 ** log_size != resolution:
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        self.resolution, self.w_dim, self.n_mlp = resolution, w_dim, n_mlp
        self.config = dict(resolution=resolution, w_dim=w_dim, n_mlp=n_mlp,
                           channel_multiplier=channel_multiplier, channel_base=channel_base,
                           channel_max=channel_max, lr_mlp=lr_mlp, conv_clamp=conv_clamp)
        self.channels = channel_table(resolution, channel_multiplier, channel_base, channel_max)
        self.num_ws = log_size * 2 - 2
        self.num_layers = (log_size - 2) * 2 + 1
        self.feature_resolutions = tuple(self.channels)

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(w_dim, w_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)])
        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, w_dim, clamp=conv_clamp)
        self.to_rgb1 = ToRGB(ch[4], w_dim, upsample=False, clamp=conv_clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        in_ch = ch[4]
        for i in range(3, log_size + 1):
            out_ch = ch[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, w_dim, upsample=True, clamp=conv_clamp))
            self.convs.append(StyledConv(out_ch, out_ch, 3, w_dim, clamp=conv_clamp))
            self.to_rgbs.append(ToRGB(out_ch, w_dim, clamp=conv_clamp))
            in_ch = out_ch
        # Filled by loaders from the checkpoint's tracked W mean; empty when unknown.
        self.register_buffer("latent_avg", torch.zeros(0), persistent=False)
        self.memory_format = torch.contiguous_format
        self.compile_options: Optional[dict] = None

    # -- speed switches --------------------------------------------------------------------------
    def use_channels_last(self, enabled: bool = True) -> "StyleGAN2Generator":
        """Keep synthesis activations channels-last (NHWC); outputs equal the default layout's up to
        float rounding. Returns self."""
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        return self

    def compile_synthesis(self, enabled: bool = True, **options) -> "StyleGAN2Generator":
        """Run :meth:`synthesis` (without ``modulate``: the blending stage's per-batch modulators would
        recompile it) through ``torch.compile(**options)``; the first call per input shape compiles
        (seconds on a GPU, minutes on a CPU). Returns self."""
        self.compile_options = dict(options) if enabled else None
        return self

    # -- mapping ---------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z ``[B,w_dim]`` (standard normal) -> w ``[B,w_dim]``; truncated towards
        ``truncation_latent`` ``[1 or B, w_dim]`` (default: :meth:`mean_latent`) when psi != 1."""
        if z.dim() != 2 or z.shape[1] != self.w_dim:
            raise ValueError(f"expected z of shape [B,{self.w_dim}], got {list(z.shape)}")
        w = self.style(z)
        if truncation_psi != 1.0:
            if truncation_latent is None:
                truncation_latent = self.mean_latent()
            w = truncation_latent + truncation_psi * (w - truncation_latent)
        return w

    def mean_latent(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """The stored ``latent_avg`` ``[1,w_dim]`` if a checkpoint provided one, else the mean of
        ``mapping`` over ``n`` standard-normal z drawn from a CPU generator seeded with ``seed``
        (deterministic on every device, unlike rosinality's fresh draws)."""
        if self.latent_avg.numel() == self.w_dim:
            return self.latent_avg.reshape(1, self.w_dim)
        z = torch.randn(n, self.w_dim, generator=torch.Generator().manual_seed(seed))
        z = z.to(device=self.input.input.device, dtype=self.input.input.dtype)
        return self.style(z).mean(0, keepdim=True)

    def set_latent_avg(self, latent_avg: Optional[torch.Tensor]) -> None:
        """Store the checkpoint's W mean ``[w_dim]`` (or ``[1,w_dim]``); None clears it."""
        if latent_avg is None:
            self.latent_avg = torch.zeros(0, device=self.input.input.device)
            return
        if latent_avg.numel() != self.w_dim:
            raise ValueError(f"latent_avg must have {self.w_dim} values, got shape {list(latent_avg.shape)}")
        self.latent_avg = latent_avg.detach().reshape(self.w_dim).to(self.input.input)

    # -- synthesis -------------------------------------------------------------------------------
    def _noise(self, i: int, x: torch.Tensor, noise_mode: str) -> Optional[torch.Tensor]:
        if noise_mode == "const":
            return getattr(self.noises, f"noise_{i}")
        if noise_mode == "random":
            r = 2 ** ((i + 5) // 2)
            return torch.randn(x.shape[0], 1, r, r, device=x.device, dtype=x.dtype)
        return None

    def synthesis(self, wplus: torch.Tensor, noise_mode: str = "const",
                  modulate: Optional[FeatureModulator] = None, return_features: bool = False):
        """wplus ``[B,num_ws,w_dim]`` -> image ``[B,3,R,R]`` (about [-1,1] for real weights).

        ``noise_mode``: ``const`` (stored ``noises.noise_i``), ``random`` (fresh N(0,1)) or ``none``.
        ``modulate(res, feat [B,C,res,res]) -> feat`` runs on the feature map after each resolution
        block, before its ToRGB. ``return_features``: also return ``{res: feat}`` (after modulate).
        """
        self.check_wplus(wplus)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if self.compile_options is not None and modulate is None:
            key = tuple(sorted(self.compile_options.items()))
            if key not in _COMPILED:
                _COMPILED[key] = torch.compile(StyleGAN2Generator._synthesize, **self.compile_options)
            return _COMPILED[key](self, wplus, noise_mode, None, return_features)
        return self._synthesize(wplus, noise_mode, modulate, return_features)

    def _synthesize(self, wplus: torch.Tensor, noise_mode: str, modulate: Optional[FeatureModulator],
                    return_features: bool):
        feats: dict[int, torch.Tensor] = {}
        fmt = self.memory_format

        def tap(res: int, x: torch.Tensor) -> torch.Tensor:
            if modulate is not None:
                x = modulate(res, x)
            if return_features:
                feats[res] = x
            return x

        x = self.input(wplus.shape[0]).to(wplus.dtype).contiguous(memory_format=fmt)
        x = self.conv1(x, wplus[:, 0], self._noise(0, x, noise_mode))
        x = tap(4, x)
        skip = self.to_rgb1(x, wplus[:, 1])
        for k, to_rgb in enumerate(self.to_rgbs):
            # the FIR upsampling reshapes, which returns the default layout: restore the chosen one
            x = self.convs[2 * k](x, wplus[:, 2 * k + 1], self._noise(2 * k + 1, x, noise_mode))
            x = self.convs[2 * k + 1](x.contiguous(memory_format=fmt), wplus[:, 2 * k + 2],
                                      self._noise(2 * k + 2, x, noise_mode))
            x = tap(2 ** (k + 3), x)
            skip = to_rgb(x, wplus[:, 2 * k + 3], skip)
        return (skip, feats) if return_features else skip

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_latent: Optional[torch.Tensor] = None, noise_mode: str = "const") -> torch.Tensor:
        """z ``[B,w_dim]`` -> image ``[B,3,R,R]`` (w broadcast to every W+ row)."""
        w = self.mapping(z, truncation_psi, truncation_latent)
        return self.synthesis(w[:, None].expand(-1, self.num_ws, -1), noise_mode=noise_mode)


# -- rosinality checkpoints ---------------------------------------------------------------------------

def infer_config(state: dict) -> dict:
    """Constructor kwargs of :class:`StyleGAN2Generator` from a rosinality ``g_ema`` state dict.

    Raises ValueError naming what is missing when ``state`` is not a StyleGAN2 generator.
    """
    needed = ("style.1.weight", "input.input", "conv1.conv.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"not a rosinality StyleGAN2 generator state dict: missing {missing} "
                         f"(first keys: {list(state)[:5]})")
    w_dim = state["style.1.weight"].shape[1]
    n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
    n_blocks = sum(1 for k in state if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    resolution = 2 ** (n_blocks + 2)
    chans = {4: state["conv1.conv.weight"].shape[1]}
    for k in range(n_blocks):
        chans[2 ** (k + 3)] = state[f"convs.{2 * k}.conv.weight"].shape[1]
    for m in (2, 1, 4, 8):
        if resolution >= 64 and channel_table(resolution, m) == chans:
            return dict(resolution=resolution, w_dim=w_dim, n_mlp=n_mlp, channel_multiplier=m)
    if resolution < 64 and all(c == 512 for c in chans.values()):
        return dict(resolution=resolution, w_dim=w_dim, n_mlp=n_mlp)
    cmax = max(chans.values())
    base = chans[resolution] * resolution
    if channel_table(resolution, channel_base=base, channel_max=cmax) == chans:
        return dict(resolution=resolution, w_dim=w_dim, n_mlp=n_mlp, channel_base=base, channel_max=cmax)
    raise ValueError(f"channel widths {chans} match neither a channel multiplier nor channel_base/max")


def generator_from_state_dict(state: dict, latent_avg: Optional[torch.Tensor] = None,
                              what: str = "state dict", **overrides) -> StyleGAN2Generator:
    """Build a generator whose size/widths fit ``state`` (rosinality layout) and load it strictly."""
    cfg = {**infer_config(state), **overrides}
    with torch.device("meta"):
        g = StyleGAN2Generator(**cfg)
    try:
        g.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{what} does not fit StyleGAN2Generator({cfg}): {e}") from e
    g.latent_avg = torch.zeros(0)
    g.set_latent_avg(latent_avg)
    return g.eval()


def load_rosinality(path_or_name: str | os.PathLike = "stylegan2-ffhq-config-f.pt") -> StyleGAN2Generator:
    """Load ``ckpt['g_ema']`` (+ ``ckpt['latent_avg']`` if present) of a rosinality checkpoint.

    Size and channel multiplier are inferred from the tensor shapes; loading is strict.
    Raises MissingCheckpointError (not found), CorruptCheckpointError (unreadable / truncated, or a
    checkpoint of another kind, e.g. an e4e encoder).
    """
    from ipsb.checkpoints import (CorruptCheckpointError, WrongCheckpointKindError, describe_contents,
                                  load_torch_file, resolve_checkpoint)

    path = resolve_checkpoint(path_or_name)
    what = "a rosinality StyleGAN2 checkpoint"
    ckpt = load_torch_file(path, what)
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        found = describe_contents(ckpt)
        hint = (" For an e4e checkpoint's own generator use ipsb.backbone.encoder.load_e4e_decoder."
                if found.startswith("an e4e") else "")
        raise WrongCheckpointKindError(
            f"'{path}' is {found}, not {what}: expected a dict with key 'g_ema' (generator state dict) and "
            f"optionally 'latent_avg' [512]; give the generator file, e.g. stylegan2-ffhq-config-f.pt "
            f"(checkpoints/README.md).{hint}")
    try:
        g = generator_from_state_dict(ckpt["g_ema"], ckpt.get("latent_avg"), what=f"'{path}' g_ema")
    except ValueError as e:
        raise CorruptCheckpointError(f"'{path}': {e}") from e
    g.checkpoint_path = str(path)   # provenance: FaceBackbone.file_hashes() hashes it
    return g
