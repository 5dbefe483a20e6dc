"""ToyGenerator: the toy world's "StyleGAN" (a fixed seeded function, never trained).

``z [B,32] --mapping--> w [B,32]``: a seeded 3-layer MLP (pixel-norm, leaky ReLU), so W has a
non-trivial distribution and truncation works; ``mean_latent`` is the mean of 4096 seeded samples.

``wplus [B,10,32] --coefficients--> coeffs [B,30]`` (ground truth, layout of
:class:`~ipsb.backbone.toy.face_model.ToyFaceModel`): for each coefficient group ``g`` with W+ rows
``L_g`` (:data:`ipsb.backbone.toy.world.LAYER_GROUPS`)::

    u_g = (wplus[:, L_g].flatten(1) - w_avg repeated) / w_std        # standardised rows
    coeff_g = CENTER_g + SCALE_g * tanh(u_g @ A_g.T)                 # A_g [c_g, 32*|L_g|], orthonormal rows

so the exact W+ subspace that moves group ``g`` is the row space of ``A_g`` placed at rows ``L_g``
(:meth:`ToyGenerator.true_subspace`). Rows 3 (identity/expression), 4-5 (expression/pose) and 6
(pose/lighting) are shared between groups.

``synthesis``: coefficients -> face mesh -> :class:`SoftRenderer` at 64 px, composited over a
background (row 8: a seeded readout to a 4 x 4 colour grid, bilinearly upsampled) plus a fine
detail texture (row 9: weights of 8 seeded high-frequency patterns) and, with ``noise_mode``
``const``/``random``, a little pixel noise. Feature maps (``feature_resolutions = (16, 32, 64)``)
are image-space tensors ``[B,10,r,r]`` with channels ``[face rgb (3) in [0,1], face mask (1) in
[0,1], background rgb (3) in [0,1], detail rgb (3) about +-0.05]``, built as a Laplacian pyramid:
``feat_16 = avgpool(raw)``, ``feat_r = up(feat_{r/2}) + (pool_r(raw) - up(pool_{r/2}(raw)))``, each
passed through ``modulate(r, feat)`` before the next level, so a modulation at any resolution
changes the image. The image is the fixed function of the last feature map
``2 * clamp(mask * face + (1 - mask) * background + detail, 0, 1) - 1`` in [-1,1].
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.interfaces import FeatureModulator, Generator
from ipsb.backbone.toy import world
from ipsb.backbone.toy.face_model import ToyFaceModel
from ipsb.backbone.toy.soft_renderer import SoftRenderer

NUM_DETAIL = 8
FEATURE_CHANNELS = 10


class ToyMapping(nn.Module):
    """z ``[B,z_dim]`` -> w ``[B,w_dim]``: pixel norm, then 3 seeded linear layers with leaky ReLU."""

    def __init__(self, seed: int, z_dim: int, w_dim: int, hidden: int = 64):
        super().__init__()
        dims = [z_dim, hidden, hidden, w_dim]
        self.layers = nn.ModuleList()
        for i in range(3):
            gen = world.seeded(seed, f"mapping{i}")
            lin = nn.Linear(dims[i], dims[i + 1])
            with torch.no_grad():
                lin.weight.copy_(torch.randn(dims[i + 1], dims[i], generator=gen) * math.sqrt(2.0 / dims[i]))
                lin.bias.copy_(0.2 * torch.randn(dims[i + 1], generator=gen))
            self.layers.append(lin)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-8)
        for i, lin in enumerate(self.layers):
            x = lin(x)
            if i < len(self.layers) - 1:
                x = F.leaky_relu(x, 0.2)
        return x


class ToyGenerator(Generator):
    """The toy world's generator (see module docstring). Output images ``[B,3,64,64]`` in [-1,1].

    ``layer_groups``: W+ rows per part of the world; ``z_dim``; ``face_model`` (a
    :class:`ToyFaceModel`) and ``renderer`` (a :class:`SoftRenderer`) are sub-modules.
    """

    def __init__(self, seed: int = 0, resolution: int = world.RESOLUTION, num_ws: int = world.NUM_WS,
                 w_dim: int = world.W_DIM, z_dim: int = world.Z_DIM, noise_strength: float = 0.01):
        super().__init__()
        if num_ws != world.NUM_WS or resolution % 16:
            raise ValueError(f"the toy world has num_ws={world.NUM_WS} (got {num_ws}) and needs a "
                             f"resolution divisible by 16 (got {resolution})")
        self.seed, self.num_ws, self.w_dim, self.z_dim = seed, num_ws, w_dim, z_dim
        self.resolution = int(resolution)
        self.feature_resolutions = (self.resolution // 4, self.resolution // 2, self.resolution)
        self.layer_groups = dict(world.LAYER_GROUPS)
        self.noise_strength = float(noise_strength)
        self.checkpoint_path = None
        self.mapping_net = ToyMapping(seed, z_dim, w_dim)
        self.face_model = ToyFaceModel(image_size=self.resolution, seed=seed)
        self.renderer = SoftRenderer(image_size=self.resolution)
        with torch.no_grad():
            w = self.mapping_net(torch.randn(4096, z_dim, generator=world.seeded(seed, "w_avg")))
        self.register_buffer("w_avg", w.mean(0, keepdim=True))                    # [1,w_dim]
        self.register_buffer("w_std", w.std(0).mean().reshape(1))                 # scalar spread
        slices = world.coeff_slices()
        for name, n in world.COEFF_LAYOUT:
            rows = len(self.layer_groups[name])
            self.register_buffer(f"readout_{name}", world.orthonormal_rows(n, rows * w_dim, world.seeded(seed, f"readout_{name}")))
        self.register_buffer("coeff_center", torch.cat([torch.tensor(world.COEFF_CENTER[k]) for k, _ in world.COEFF_LAYOUT]))
        self.register_buffer("coeff_scale", torch.cat([torch.tensor(world.COEFF_SCALE[k]) for k, _ in world.COEFF_LAYOUT]))
        self._slices = slices
        gen = world.seeded(seed, "background")
        self.register_buffer("readout_background", world.orthonormal_rows(3 * 16, w_dim, gen) if w_dim >= 48
                             else torch.randn(3 * 16, w_dim, generator=gen) / math.sqrt(w_dim))
        self.register_buffer("readout_detail", world.orthonormal_rows(NUM_DETAIL, w_dim, world.seeded(seed, "detail")))
        gen = world.seeded(seed, "patterns")
        pat = torch.randn(NUM_DETAIL, 3, self.resolution, self.resolution, generator=gen)
        pat = pat - F.avg_pool2d(pat, 5, 1, 2, count_include_pad=False)           # high-pass
        self.register_buffer("detail_patterns", 0.015 * pat / pat.std())
        self.register_buffer("const_noise", torch.randn(1, 3, self.resolution, self.resolution,
                                                        generator=world.seeded(seed, "noise")))

    # ----------------------------------------------------------------- latent side
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z ``[B,32]`` -> w ``[B,32]``, truncated towards ``truncation_latent`` (default ``w_avg``)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape [B,{self.z_dim}], got {list(z.shape)}")
        w = self.mapping_net(z)
        if truncation_psi != 1.0:
            center = self.w_avg if truncation_latent is None else truncation_latent.reshape(-1, self.w_dim)
            w = center + truncation_psi * (w - center)
        return w

    def mean_latent(self, n: int = 4096) -> torch.Tensor:
        """Mean w ``[1,32]`` of ``n`` seeded samples (``w_avg`` for n = 4096)."""
        if n == 4096:
            return self.w_avg.clone()
        z = torch.randn(n, self.z_dim, generator=world.seeded(self.seed, "w_avg")).to(self.w_avg.device)
        return self.mapping_net(z).mean(0, keepdim=True)

    def sample_wplus(self, n: int, seed: int = 0, truncation_psi: float = 1.0, mix: bool = False) -> torch.Tensor:
        """``n`` seeded W+ codes ``[n,10,32]``: one w per code repeated over rows, or (``mix``) an
        independent w per row (the toy world's rows are independent parts, so mixing stays in-distribution)."""
        gen = torch.Generator().manual_seed(seed)
        rows = self.num_ws if mix else 1
        z = torch.randn(n * rows, self.z_dim, generator=gen).to(self.w_avg.device)
        w = self.mapping(z, truncation_psi).view(n, rows, self.w_dim)
        return w.expand(n, self.num_ws, self.w_dim).contiguous() if not mix else w

    # ----------------------------------------------------------------- ground truth
    def _rows(self, wplus: torch.Tensor, name: str) -> torch.Tensor:
        rows = list(self.layer_groups[name])
        return ((wplus[:, rows] - self.w_avg) / self.w_std).flatten(1)

    def coefficients(self, wplus: torch.Tensor) -> torch.Tensor:
        """Ground-truth 3DMM coefficients ``[B,30]`` of W+ codes ``[B,10,32]`` (ToyFaceModel layout)."""
        self.check_wplus(wplus)
        pre = torch.cat([self._rows(wplus, name) @ getattr(self, f"readout_{name}").T
                         for name, _ in world.COEFF_LAYOUT], -1)
        return self.coeff_center + self.coeff_scale * torch.tanh(pre)

    def true_subspace(self, group: str | tuple[str, ...]) -> torch.Tensor:
        """Orthonormal basis ``[num_ws*w_dim, k]`` of the W+ directions that move ``group``
        (a coefficient group such as ``"exp"`` or an alias: ``"pose"`` = angle + trans,
        ``"identity"`` = id + tex, ``"lighting"`` = gamma), in ``wplus.flatten(1)`` coordinates."""
        cols = []
        for name in world.expand_groups(group):
            a0, b0 = self._slices[name]
            a = getattr(self, f"readout_{name}")[self.coeff_scale[a0:b0] != 0]   # fixed coefficients move nothing
            full = torch.zeros(a.shape[0], self.num_ws, self.w_dim, dtype=a.dtype, device=a.device)
            for j, row in enumerate(self.layer_groups[name]):
                full[:, row] = a[:, j * self.w_dim:(j + 1) * self.w_dim]
            cols.append(full.flatten(1))
        q, _ = torch.linalg.qr(torch.cat(cols, 0).T)
        return q

    # ----------------------------------------------------------------- image side
    def background(self, w_row: torch.Tensor) -> torch.Tensor:
        """Row-8 w ``[B,32]`` -> background ``[B,3,R,R]`` in [0,1] (smooth 4 x 4 colour grid)."""
        u = (w_row - self.w_avg) / self.w_std
        grid = torch.sigmoid(0.8 * (u @ self.readout_background.T)).view(-1, 3, 4, 4)
        return F.interpolate(grid, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)

    def detail(self, w_row: torch.Tensor) -> torch.Tensor:
        """Row-9 w ``[B,32]`` -> detail texture ``[B,3,R,R]`` (about +-0.1)."""
        weights = torch.tanh((w_row - self.w_avg) / self.w_std @ self.readout_detail.T)
        return torch.einsum("bk,kchw->bchw", weights, self.detail_patterns)

    def render_coefficients(self, coeffs: torch.Tensor):
        """coeffs ``[B,30]`` -> :class:`RenderOutput` of the face alone (image/mask in [0,1])."""
        geom = self.face_model(coeffs)
        return self.renderer(geom.vertices, self.face_model.faces, geom.colors)

    def raw_features(self, wplus: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """W+ -> the unmodulated full-resolution feature map ``[B,10,R,R]`` (channel layout above)."""
        return self.raw_features_of(self.coefficients(wplus), wplus, noise_mode)

    def raw_features_of(self, coeffs: torch.Tensor, wplus: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Feature map ``[B,10,R,R]`` of the face with coefficients ``coeffs [B,30]`` (any values, e.g. a
        perturbed readout) over the background and detail of ``wplus`` rows 8 and 9."""
        out = self.render_coefficients(coeffs)
        detail = self.detail(wplus[:, 9])
        if noise_mode == "const":
            detail = detail + self.noise_strength * self.const_noise
        elif noise_mode == "random":
            detail = detail + self.noise_strength * torch.randn_like(detail)
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        return torch.cat([out.image, out.mask, self.background(wplus[:, 8]), detail], 1)

    @staticmethod
    def compose(features: torch.Tensor) -> torch.Tensor:
        """Last feature map ``[B,10,R,R]`` -> image ``[B,3,R,R]`` in [-1,1]."""
        face, mask, bg, detail = features[:, 0:3], features[:, 3:4].clamp(0, 1), features[:, 4:7], features[:, 7:10]
        return 2 * (mask * face + (1 - mask) * bg + detail).clamp(0, 1) - 1

    def synthesis(self, wplus: torch.Tensor, noise_mode: str = "const",
                  modulate: Optional[FeatureModulator] = None, return_features: bool = False):
        """wplus ``[B,10,32]`` -> image ``[B,3,64,64]`` in [-1,1] (and ``{res: features [B,10,res,res]}``)."""
        self.check_wplus(wplus)
        raw = self.raw_features(wplus, noise_mode)
        if modulate is None and not return_features:
            return self.compose(raw)      # the pyramid below reconstructs ``raw`` exactly
        feats, prev, prev_raw = {}, None, None
        for res in self.feature_resolutions:
            level = F.adaptive_avg_pool2d(raw, res) if res != self.resolution else raw
            if prev is None:
                cur = level
            else:
                up = lambda t: F.interpolate(t, size=(res, res), mode="bilinear", align_corners=False)
                cur = up(prev) + (level - up(prev_raw))
            if modulate is not None:
                cur = modulate(res, cur)
            feats[res] = cur
            prev, prev_raw = cur, level
        image = self.compose(feats[self.resolution])
        return (image, feats) if return_features else image

    def forward(self, wplus: torch.Tensor, **kwargs):
        """Alias of :meth:`synthesis`."""
        return self.synthesis(wplus, **kwargs)
