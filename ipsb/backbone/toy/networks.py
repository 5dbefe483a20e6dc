"""The toy world's trained networks: 3DMM regressor, identity encoder, face masker, W+ encoder.

Real small CNNs trained on toy renders by ``python -m ipsb.training.toy_networks`` (seeded), not
oracles: they see only the image. No BatchNorm (GroupNorm only), no in-place ops, no
data-dependent control flow, so they run under ``torch.func`` (vmap / jacrev) like the generator.
Weights live in ``ipsb/assets/toy/*.pt`` (float16 state dicts, loaded with ``weights_only=True``
and cast to float32); each network records the file it loaded in ``checkpoint_path``.

* :class:`ToyRegressor` image ``[B,3,H,W]`` in [-1,1] -> coefficients ``[B,30]`` (ToyFaceModel
  layout; the net predicts standardised coefficients, de-standardised with stored buffers).
* :class:`ToyIdentity` image -> L2-normalised embedding ``[B,14]``: a smaller CNN whose outputs at
  the identity coefficients (id 8 + tex 6, standardised) form the embedding, so different
  identities are nearly orthogonal on average. It is first trained like the regressor, then
  fine-tuned (:mod:`ipsb.training.toy_identity`) on same-identity pairs (expression, pose,
  light and background from another code) so one identity keeps its direction, and last with a
  penalty on its derivative along exact expression / pose image tangents, so it is also locally
  insensitive to them (what the basis' identity metric needs).
* :class:`ToyMasker` image -> soft face mask ``[B,1,H,W]`` in [0,1] (a tiny U-Net).
* :class:`ToyEncoder` image -> W+ ``[B,10,32]``: the toy world's e4e, so inverting a toy image is one
  forward pass (:meth:`ipsb.backbone.bundle.FaceBackbone.encode`).
Inputs of another size are resized to 64 px (bilinear) and outputs of the masker back.

The regressor and the identity encoder see the image through a fixed Gaussian low-pass
(:data:`INPUT_BLUR_SIGMA` = 1 px, via kornia), as real ones see a 1024 px StyleGAN image through an
antialiased resize to 224 / 112 px. Why: the basis differentiates these networks along the
generator's exact image tangents, and the toy rasteriser's edges are sharp (sigma 0.35 px), so those
tangents are spikes along the silhouette and fold lines (up to several hundred per unit coefficient).
A network trained on values alone answers such spikes almost arbitrarily; behind the low-pass the
same regressor's Jacobians put 0.97-0.99 of the true pose subspace into the pose basis, against
0.93-0.95 without it (16 samples, identity metric from the ground truth). The masker, a
segmentation net whose output must stay sharp, sees the raw image.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch
import kornia
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.interfaces import CoeffRegressor, FaceMasker, IdentityEncoder
from ipsb.backbone.toy import world
from ipsb.backbone.state_loading import load_state_strict, read_state_dict
from ipsb.checkpoints import MissingCheckpointError

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets" / "toy"
#: Conv widths of the regressor and of the identity encoder (the shipped assets' architectures).
REGRESSOR_WIDTHS = (32, 64, 128, 128)
IDENTITY_WIDTHS = (16, 32, 64, 64)
#: The W+ encoder's coarse conv widths, 1x1 squeeze channels, fine-branch outputs and head width.
ENCODER_WIDTHS, ENCODER_SQUEEZE, ENCODER_FINE, ENCODER_HIDDEN = (24, 48, 64, 96), 16, 8, 128
INPUT_SIZE = world.RESOLUTION
#: Low-pass (Gaussian sigma, pixels) in front of the regressor and the identity encoder; see the module docstring.
INPUT_BLUR_SIGMA = 1.0


def _to_input(image: torch.Tensor, blur_sigma: float = 0.0) -> torch.Tensor:
    """Check ``image [B,3,H,W]``, resize it to 64 px and, with ``blur_sigma`` > 0, low-pass it
    (Gaussian, sigma in pixels, kernel ``2*ceil(3 sigma)+1``, replicated borders)."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an image batch [B,3,H,W] in [-1,1], got {list(image.shape)}")
    if image.shape[-1] != INPUT_SIZE or image.shape[-2] != INPUT_SIZE:
        image = F.interpolate(image, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
    if blur_sigma > 0:
        k = 2 * math.ceil(3 * blur_sigma) + 1
        image = kornia.filters.gaussian_blur2d(image, (k, k), (blur_sigma, blur_sigma), border_type="replicate")
    return image


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv -> GroupNorm(8) -> SiLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


def conv_stack(widths) -> nn.Sequential:
    """image ``[B,3,64,64]`` -> features ``[B,widths[-1],s,s]``, ``s = 64 / 2^len(widths)``: one stride-2
    :func:`conv_block` per width."""
    return nn.Sequential(*(conv_block(cin, cout, 2) for cin, cout in zip((3, *widths[:-1]), widths)))


class ConvEncoder(nn.Module):
    """image ``[B,3,64,64]`` -> feature vector ``[B,hidden]`` (four stride-2 conv blocks + MLP)."""

    def __init__(self, out_dim: int, widths=(16, 32, 64, 64), hidden: int = 128):
        super().__init__()
        self.convs = conv_stack(widths)
        side = INPUT_SIZE // 2 ** len(widths)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, hidden), nn.SiLU(),
                                  nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))


def load_asset(module: nn.Module, path, what: str) -> Path:
    """Load a float16 state dict from ``path`` into ``module`` strictly (float32); an unreadable file or
    one of another kind or layout is named in one line (:mod:`ipsb.backbone.state_loading`)."""
    p = Path(path)
    if not p.is_file():
        raise MissingCheckpointError(
            f"toy {what} weights '{p}' not found; they ship with ipsb in ipsb/assets/toy/ "
            f"(regenerate with `python -m ipsb.training.toy_networks --out DIR`, see ipsb/assets/toy/README.md)")
    state, label = read_state_dict(p, f"toy {what} weights")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_state_strict(module, state, label, f"toy {what}", optional=lambda key: False)
    return p


class _ToyNet(nn.Module):
    """Shared loading behaviour: ``weights`` = a path, ``"default"`` (the shipped asset) or None (random)."""

    asset_name = ""
    what = ""

    def _load(self, weights: Optional[str]) -> None:
        self.checkpoint_path = None
        if weights is None:
            return
        path = ASSETS / self.asset_name if weights == "default" else Path(os.path.expanduser(weights))
        self.checkpoint_path = str(load_asset(self, path, self.what))


class ToyRegressor(CoeffRegressor, _ToyNet):
    """Toy 3DMM regressor: image ``[B,3,H,W]`` in [-1,1] -> coefficients ``[B,30]``."""

    asset_name, what = "regressor.pt", "3DMM regressor"

    def __init__(self, weights: Optional[str] = "default"):
        super().__init__()
        self.net = ConvEncoder(world.NUM_COEFFS, widths=REGRESSOR_WIDTHS)
        self.register_buffer("coeff_mean", torch.zeros(world.NUM_COEFFS))
        self.register_buffer("coeff_std", torch.ones(world.NUM_COEFFS))
        self.coeff_groups = world.coeff_slices()
        self._load(weights)

    def forward_standardized(self, image: torch.Tensor) -> torch.Tensor:
        """image -> standardised coefficients ``[B,30]`` (what the net is trained on)."""
        return self.net(_to_input(image, INPUT_BLUR_SIGMA))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.coeff_mean + self.coeff_std * self.forward_standardized(image)


class ToyIdentity(IdentityEncoder, _ToyNet):
    """Toy identity encoder: image ``[B,3,H,W]`` in [-1,1] -> L2-normalised embedding ``[B,14]``."""

    asset_name, what = "identity.pt", "identity encoder"
    embedding_dim = 14

    def __init__(self, weights: Optional[str] = "default"):
        super().__init__()
        self.net = ConvEncoder(world.NUM_COEFFS, widths=IDENTITY_WIDTHS)
        sl = world.coeff_slices()
        self.register_buffer("embed_index", torch.tensor([*range(*sl["id"]), *range(*sl["tex"])]))
        self._load(weights)

    def outputs(self, image: torch.Tensor) -> torch.Tensor:
        """All ``[B,30]`` outputs (pre-trained to equal the standardised coefficients)."""
        return self.net(_to_input(image, INPUT_BLUR_SIGMA))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Unnormalised output ``[B,14]`` (trained to equal the standardised id + tex coefficients)."""
        return self.outputs(image)[:, self.embed_index]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.features(image)
        return f / torch.sqrt((f * f).sum(-1, keepdim=True) + 1e-12)


class ToyMasker(FaceMasker, _ToyNet):
    """Toy face masker: image ``[B,3,H,W]`` in [-1,1] -> soft face mask ``[B,1,H,W]`` in [0,1]."""

    asset_name, what = "masker.pt", "face masker"

    def __init__(self, weights: Optional[str] = "default"):
        super().__init__()
        self.e1, self.e2, self.e3 = conv_block(3, 8), conv_block(8, 16, 2), conv_block(16, 32, 2)
        self.d2, self.d1 = conv_block(48, 16), conv_block(24, 8)
        self.out = nn.Conv2d(8, 1, 3, 1, 1)
        self._load(weights)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """image -> mask logits ``[B,1,64,64]``."""
        x = _to_input(image)
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        d2 = self.d2(torch.cat([F.interpolate(e3, scale_factor=2.0, mode="bilinear", align_corners=False), e2], 1))
        d1 = self.d1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False), e1], 1))
        return self.out(d1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(self.logits(image))
        if m.shape[-2:] != image.shape[-2:]:
            m = F.interpolate(m, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return m


class ToyEncoder(_ToyNet):
    """Toy W+ encoder (the toy world's e4e): image ``[B,3,H,W]`` in [-1,1] -> W+ ``[B,10,32]``.

    A coarse branch (four stride-2 conv blocks, a 1x1 squeeze and a flatten, so pose stays spatial)
    and a fine branch (one linear read of the full-resolution image: the detail row's texture is a
    sum of fixed high-frequency patterns, which a linear map reads and a stack of small-kernel,
    downsampling convs blurs away) feed an MLP head that predicts the offsets of all ten rows from
    ``latent_avg`` in units of ``latent_scale`` (the generator's ``w_avg`` and ``w_std``, stored with
    the weights). The image shows only a few directions of each row (30 coefficient readouts, the
    background grid, 8 detail weights); in the other directions it is trained to give the codes'
    conditional mean (:mod:`ipsb.training.toy_encoder`). No blur in front: row 9 is fine detail.
    """

    asset_name, what = "encoder.pt", "W+ encoder"
    input_size = INPUT_SIZE

    def __init__(self, weights: Optional[str] = "default"):
        super().__init__()
        side = INPUT_SIZE // 2 ** len(ENCODER_WIDTHS)
        self.coarse = nn.Sequential(*conv_stack(ENCODER_WIDTHS), nn.Conv2d(ENCODER_WIDTHS[-1], ENCODER_SQUEEZE, 1),
                                    nn.Flatten())
        self.fine = nn.Linear(3 * INPUT_SIZE * INPUT_SIZE, ENCODER_FINE)
        self.head = nn.Sequential(nn.Linear(ENCODER_SQUEEZE * side * side + ENCODER_FINE, ENCODER_HIDDEN), nn.SiLU(),
                                  nn.Linear(ENCODER_HIDDEN, world.NUM_WS * world.W_DIM))
        self.register_buffer("latent_avg", torch.zeros(1, world.W_DIM))
        self.register_buffer("latent_scale", torch.ones(1))
        self._load(weights)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image -> standardised W+ offsets ``[B,10,32]`` (``(wplus - latent_avg) / latent_scale``)."""
        x = _to_input(image)
        return self.head(torch.cat([self.coarse(x), self.fine(x.flatten(1))], 1)).view(-1, world.NUM_WS, world.W_DIM)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image ``[B,3,H,W]`` in [-1,1] -> W+ ``[B,10,32]`` of the toy generator."""
        return self.latent_avg + self.latent_scale * self.forward(image)
