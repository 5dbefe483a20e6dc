"""e4e (encoder4editing) image -> W+ encoder: ``Encoder4Editing`` with an IR-SE50 body, and its loader.

Module names and shapes follow the official ``e4e_ffhq_encode.pt`` (``state_dict`` keys ``encoder.*``,
621 entries, 267M parameters), so the encoder part loads strictly. Architecture (from the fixture
README ``tests/fixtures/e4e/README.md``):

- ``input_layer``: Conv3x3(3->64, no bias) -> BN -> PReLU; ``body``: 24 ``bottleneck_IR_SE`` units
  (3 x 64, 4 x 128, 14 x 256, 3 x 512 channels, first unit of each stage stride 2).
- taps ``c1 = body[6]`` [B,128,64,64], ``c2 = body[20]`` [B,256,32,32], ``c3 = body[23]`` [B,512,16,16].
- ``styles[i]`` (GradualStyleBlock): log2(s) x (Conv3x3 stride 2 + LeakyReLU 0.01) -> EqualLinear;
  s = 16 for rows 0-2 (on c3), 32 for 3-6 (on c3 upsampled + latlayer1(c2)), 64 for 7+ (+ latlayer2(c1)).
- codes: row 0 = ``styles[0](c3)`` broadcast to every row, row i += ``styles[i](features)``;
  ``encode`` adds ``latent_avg`` (the generator's mean W, repeated per row).
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.identity_irse import BottleneckIRSE
from ipsb.backbone.interfaces import freeze
from ipsb.backbone.stylegan2_layers import EqualLinear
from ipsb.checkpoints import (CorruptCheckpointError, WrongCheckpointKindError, describe_contents, foreign_kind,
                              load_torch_file, resolve_checkpoint)

#: (in_channel, depth, units) per IR-SE50 stage.
IRSE50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
COARSE_IND, MIDDLE_IND = 3, 7


class GradualStyleBlock(nn.Module):
    """features ``[B,C,s,s]`` -> one W+ row ``[B,out_c]`` (log2(s) stride-2 convs + EqualLinear)."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        for _ in range(int(math.log2(spatial)) - 1):
            layers += [nn.Conv2d(out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)
        self.out_c = out_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


class Encoder4Editing(nn.Module):
    """e4e encoder. image ``[B,3,256,256]`` in [-1,1] -> W+ offsets ``[B,num_ws,512]`` (``forward``)
    or W+ codes (``encode`` = forward + ``latent_avg``).

    Args:
        stylegan_size: resolution of the generator it encodes for; ``num_ws = 2*log2(size) - 2``.
        progressive_stage: number of rows that get their own delta (inference: all, the default).
    """

    input_size = 256

    def __init__(self, stylegan_size: int = 1024, w_dim: int = 512, progressive_stage: Optional[int] = None):
        super().__init__()
        self.num_ws = 2 * int(math.log2(stylegan_size)) - 2
        self.w_dim = w_dim
        self.progressive_stage = self.num_ws if progressive_stage is None else progressive_stage
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_c, depth, n in IRSE50_STAGES:
            units.append(BottleneckIRSE(in_c, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.styles = nn.ModuleList(
            GradualStyleBlock(512, w_dim, 16 if i < COARSE_IND else 32 if i < MIDDLE_IND else 64)
            for i in range(self.num_ws))
        self.latlayer1 = nn.Conv2d(256, 512, 1)
        self.latlayer2 = nn.Conv2d(128, 512, 1)
        # The generator's mean W per row [num_ws, w_dim]; set by the loader (None: not known).
        self.register_buffer("latent_avg", None, persistent=False)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image -> body taps (c1 ``[B,128,64,64]``, c2 ``[B,256,32,32]``, c3 ``[B,512,16,16]``)."""
        x = self.input_layer(x)
        taps = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in (6, 20, 23):
                taps[i] = x
        return taps[6], taps[20], taps[23]

    @staticmethod
    def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """image ``[B,3,256,256]`` in [-1,1] -> offsets ``[B,num_ws,w_dim]`` (without ``latent_avg``)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.input_size, self.input_size):
            raise ValueError(f"e4e expects images of shape [B,3,{self.input_size},{self.input_size}] in "
                             f"[-1,1] (resize first), got {list(x.shape)}")
        c1, c2, c3 = self.features(x)
        w0 = self.styles[0](c3)
        rows = [w0]
        features, p2 = c3, None
        for i in range(1, self.num_ws):
            if i >= self.progressive_stage + 1:
                rows.append(w0)
                continue
            if i == COARSE_IND:
                p2 = self._upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == MIDDLE_IND:
                features = self._upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](features))
        return torch.stack(rows, dim=1)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image ``[B,3,256,256]`` in [-1,1] -> W+ ``[B,num_ws,w_dim]`` (offsets + ``latent_avg``)."""
        codes = self.forward(image)
        if self.latent_avg is None:
            raise ValueError("this encoder has no latent_avg (the generator's mean W); load it with "
                             "load_e4e or set encoder.latent_avg = [num_ws, w_dim] tensor")
        return codes + self.latent_avg.to(codes)

    def set_latent_avg(self, latent_avg: Optional[torch.Tensor]) -> None:
        """``latent_avg`` ``[w_dim]``, ``[1,w_dim]`` or ``[num_ws,w_dim]`` -> stored as ``[num_ws,w_dim]``."""
        if latent_avg is None:
            self.latent_avg = None
            return
        t = latent_avg.detach().float()
        if t.numel() == self.w_dim:
            t = t.reshape(1, self.w_dim).expand(self.num_ws, -1)
        if tuple(t.shape) != (self.num_ws, self.w_dim):
            raise ValueError(f"latent_avg must be [{self.w_dim}] or [{self.num_ws},{self.w_dim}], "
                             f"got {list(latent_avg.shape)}")
        self.latent_avg = t.clone()


def _state_dict_of(ckpt, path) -> dict:
    if isinstance(ckpt, dict) and "g_ema" in ckpt:
        raise WrongCheckpointKindError(
            f"'{path}' is a StyleGAN2 generator checkpoint (key 'g_ema'), not an e4e encoder: expected "
            f"a dict with 'state_dict' (keys encoder.*, decoder.*) and 'latent_avg' [18,512]. Load "
            f"generators with ipsb.backbone.stylegan2.load_rosinality.")
    foreign = foreign_kind(ckpt)
    if (not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict)
            or (foreign is not None and not foreign.startswith("an e4e"))):
        raise WrongCheckpointKindError(
            f"'{path}' is {describe_contents(ckpt)}, not an e4e checkpoint: expected a dict with 'state_dict' "
            f"(keys encoder.*, decoder.*), 'opts' and 'latent_avg' [18,512]; give e4e_ffhq_encode.pt "
            f"(checkpoints/README.md)")
    return ckpt["state_dict"]


def _decoder_state(sd: dict) -> dict:
    return {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}


def load_e4e(path_or_name: str | os.PathLike = "e4e_ffhq_encode.pt") -> Encoder4Editing:
    """Official e4e checkpoint -> frozen :class:`Encoder4Editing` (strict), with ``latent_avg``.

    Size and ``w_dim`` come from ``opts['stylegan_size']`` / the tensor shapes; missing
    ``num_batches_tracked`` entries are accepted. ``latent_avg``: the checkpoint's ``[18,512]``
    entry; if absent but ``opts['start_from_latent_avg']`` is set, e4e's own fallback (the mean W of
    10,000 random z through the stored ``decoder.*`` generator; random, so a warning is issued).
    Raises MissingCheckpointError (not found) or CorruptCheckpointError (truncated, wrong kind such as
    a StyleGAN2 generator file, or keys/shapes that do not fit).
    """
    path = resolve_checkpoint(path_or_name)
    ckpt = load_torch_file(path, "an e4e encoder checkpoint")
    sd = _state_dict_of(ckpt, path)
    enc_sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    if not enc_sd:
        raise CorruptCheckpointError(f"'{path}' has no encoder.* weights (first keys: {list(sd)[:5]})")
    n_styles = len({k.split(".")[1] for k in enc_sd if k.startswith("styles.")})
    opts = ckpt.get("opts") if isinstance(ckpt.get("opts"), dict) else {}
    size = int(opts.get("stylegan_size", 2 ** ((n_styles + 2) // 2)))
    lin = enc_sd.get("styles.0.linear.weight")
    w_dim = int(lin.shape[0]) if lin is not None else 512
    with torch.device("meta"):
        enc = Encoder4Editing(stylegan_size=size, w_dim=w_dim)
    for k, v in enc.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in enc_sd:
            enc_sd[k] = torch.zeros((), dtype=torch.long)  # old checkpoints may lack it
    try:
        enc.load_state_dict(enc_sd, strict=True, assign=True)
    except RuntimeError as e:
        raise CorruptCheckpointError(f"'{path}' encoder weights do not fit Encoder4Editing(stylegan_size="
                                     f"{size}, w_dim={w_dim}, IR-SE50): {e}") from e
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is None and opts.get("start_from_latent_avg") and _decoder_state(sd):
        from ipsb.backbone.stylegan2 import generator_from_state_dict

        warnings.warn(f"'{path}' has no latent_avg; using the mean W of 10000 random z through its "
                      f"decoder, as e4e does (not reproducible across runs)")
        with torch.no_grad():
            latent_avg = generator_from_state_dict(_decoder_state(sd)).mean_latent(10000)[0]
    if latent_avg is None:
        warnings.warn(f"'{path}' has no latent_avg; encode() needs one (set_latent_avg)")
    else:
        enc.set_latent_avg(latent_avg)
    enc.checkpoint_path = str(path)   # provenance: FaceBackbone.file_hashes() hashes it
    return freeze(enc)


def load_e4e_decoder(path_or_name: str | os.PathLike = "e4e_ffhq_encode.pt"):
    """The StyleGAN2 generator stored in an e4e checkpoint (``decoder.*``, rosinality layout)."""
    from ipsb.backbone.stylegan2 import generator_from_state_dict

    path = resolve_checkpoint(path_or_name)
    ckpt = load_torch_file(path, "an e4e checkpoint")
    sd = _state_dict_of(ckpt, path)
    dec = _decoder_state(sd)
    la = ckpt.get("latent_avg")
    try:
        return generator_from_state_dict(dec, None if la is None else la.reshape(-1, la.shape[-1])[0],
                                         what=f"'{path}' decoder")
    except ValueError as e:
        raise CorruptCheckpointError(str(e)) from e
