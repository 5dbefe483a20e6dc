"""The contracts every backbone component implements, so real and toy networks are interchangeable.

Stage code (losses, basis, stages, metrics) talks only to these interfaces. Conventions:
images are float tensors ``[B,3,H,W]`` in ``[-1,1]`` (RGB) unless a name says otherwise; W+ codes
are ``[B,num_ws,w_dim]``; 3DMM coefficients are one flat vector ``[B,C]`` whose groups a
:class:`FaceModel` names through ``coeff_groups``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

#: Standard 3DMM coefficient group names (Deep3DFaceRecon order). A face model may omit groups.
COEFF_GROUPS = ("id", "exp", "tex", "angle", "gamma", "trans")

#: ``modulate(resolution, features [B,C,r,r]) -> features`` hook run inside a generator's synthesis.
FeatureModulator = Callable[[int, torch.Tensor], torch.Tensor]


class Generator(nn.Module, abc.ABC):
    """A style generator with a W+ interface (StyleGAN2 or the toy world).

    Attributes: ``num_ws`` (rows of W+), ``w_dim`` (width of a row), ``resolution`` (output side),
    ``feature_resolutions`` (resolutions whose feature maps ``synthesis`` can expose/modulate).
    """

    num_ws: int
    w_dim: int
    resolution: int
    feature_resolutions: tuple[int, ...]

    @abc.abstractmethod
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z ``[B,z_dim]`` -> w ``[B,w_dim]`` (truncated towards ``truncation_latent`` if psi < 1)."""

    @abc.abstractmethod
    def synthesis(self, wplus: torch.Tensor, noise_mode: str = "const",
                  modulate: Optional[FeatureModulator] = None,
                  return_features: bool = False):
        """wplus ``[B,num_ws,w_dim]`` -> image ``[B,3,R,R]`` in about [-1,1].

        ``noise_mode``: ``const`` (stored noise), ``random`` or ``none``. ``modulate`` is applied to
        the feature map of each resolution in ``feature_resolutions``. With ``return_features`` the
        result is ``(image, {resolution: features})``.
        """

    @abc.abstractmethod
    def mean_latent(self, n: int = 4096) -> torch.Tensor:
        """The average w ``[1,w_dim]`` (a stored ``latent_avg`` when the checkpoint has one)."""

    def check_wplus(self, wplus: torch.Tensor) -> None:
        """Raise a clear ValueError unless ``wplus`` is ``[B,num_ws,w_dim]``."""
        if wplus.dim() != 3 or wplus.shape[1] != self.num_ws or wplus.shape[2] != self.w_dim:
            raise ValueError(
                f"expected a W+ tensor of shape [B,{self.num_ws},{self.w_dim}] for this generator, "
                f"got {list(wplus.shape)}")


@dataclass
class FaceGeometry:
    """Output of a :class:`FaceModel` forward.

    vertices ``[B,N,3]`` camera space (the renderer's camera looks down -z or +z as the model says),
    colors ``[B,N,3]`` shaded vertex colours in [0,1], albedo ``[B,N,3]`` in [0,1],
    landmarks ``[B,L,2]`` projected landmarks in pixels of the model's image size.
    """

    vertices: torch.Tensor
    colors: torch.Tensor
    albedo: torch.Tensor
    landmarks: torch.Tensor


class FaceModel(nn.Module, abc.ABC):
    """A parametric 3D face model (BFM as used by Deep3DFaceRecon, or the toy world's mesh).

    ``coeff_groups`` maps a group name from :data:`COEFF_GROUPS` to its ``(start, end)`` slice of the
    flat coefficient vector; ``num_coeffs`` is the total width; ``faces`` is ``[F,3]`` long.
    """

    coeff_groups: dict[str, tuple[int, int]]
    num_coeffs: int
    faces: torch.Tensor
    image_size: int

    def split(self, coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
        """coeffs ``[B,C]`` -> ``{group: [B,c_g]}``."""
        if coeffs.shape[-1] != self.num_coeffs:
            raise ValueError(f"expected {self.num_coeffs} 3DMM coefficients, got {coeffs.shape[-1]}")
        return {k: coeffs[..., a:b] for k, (a, b) in self.coeff_groups.items()}

    def merge(self, groups: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`split` (all groups required)."""
        return torch.cat([groups[k] for k, _ in sorted(self.coeff_groups.items(), key=lambda kv: kv[1][0])], -1)

    @abc.abstractmethod
    def shape(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """Identity + expression -> model-space vertices ``[B,N,3]`` (no pose)."""

    @abc.abstractmethod
    def forward(self, coeffs: torch.Tensor) -> FaceGeometry:
        """Full coefficients ``[B,C]`` -> posed, shaded geometry in camera space."""


@dataclass
class RenderOutput:
    """image ``[B,3,H,W]`` in [0,1]; mask ``[B,1,H,W]`` in [0,1]; depth ``[B,1,H,W]`` (0 off-face)."""

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor


class Renderer(nn.Module, abc.ABC):
    """Differentiable mesh renderer: camera-space vertices + per-vertex colours -> image, mask, depth."""

    image_size: int

    @abc.abstractmethod
    def forward(self, vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor) -> RenderOutput:
        """vertices ``[B,N,3]``, faces ``[F,3]`` long, colors ``[B,N,3]`` -> :class:`RenderOutput`."""


class CoeffRegressor(nn.Module, abc.ABC):
    """3DMM regressor: aligned face image ``[B,3,H,W]`` in [-1,1] -> coefficients ``[B,C]``.

    The regressor does its own crop/resize/value-range conversion to its training convention.
    """


class IdentityEncoder(nn.Module, abc.ABC):
    """Face recognition network: aligned face ``[B,3,H,W]`` in [-1,1] -> L2-normalised ``[B,D]``.

    It does its own crop/resize to its input convention (e.g. IR-SE50: 256 -> crop -> 112).
    """


class PoseEstimator(nn.Module, abc.ABC):
    """Head pose network: aligned face ``[B,3,H,W]`` in [-1,1] -> ``[B,3]`` (yaw, pitch, roll) degrees."""


class FaceMasker(nn.Module, abc.ABC):
    """Face mask source: image ``[B,3,H,W]`` in [-1,1] -> soft face mask ``[B,1,H,W]`` in [0,1]."""


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode with every parameter ``requires_grad=False``; returns it."""
    module.eval()
    module.requires_grad_(False)
    return module
