"""SoftRenderer: a pure-torch soft rasterizer implementing :class:`interfaces.Renderer`.

Why hand-written instead of pytorch3d: pytorch3d's rasterizer is a custom ``autograd.Function``
(C++/CUDA kernels), which ``torch.func`` (vmap / jacrev / jvp, used by the basis construction)
does not support. For a few hundred triangles at 64 px a vectorised formulation made only of
ordinary differentiable tensor ops is fast enough on CPU.

Method (SoftRas-style, no data-dependent Python control flow):

* Vertices are projected with the toy pinhole camera (:mod:`ipsb.backbone.toy.world`).
  Front faces are counter-clockwise as seen from the camera; back faces get no coverage.
* The image is cut into ``tile`` x ``tile`` pixel tiles. Each tile keeps the ``faces_per_tile``
  front faces whose centroids are nearest to it (``topk``: integer indices, no gradient needed;
  faces farther away have coverage ~0 anyway). This cuts the dense ``[H*W, F]`` pixel-face work
  about twentyfold; ``faces_per_tile >= F`` gives the exact dense result. With the default 16 (toy
  mesh, 64 px) 0.06% of pixels differ from the dense result by more than 0.05, at 2.4x the speed of 32.
* For each kept triangle the three signed edge distances (pixels) are affine in the pixel
  position, so they come from one batched matmul. Coverage is ``sigmoid(min_distance / sigma)``.
* Colour, depth and inverse depth are affine (barycentric) planes per face, also matmuls.
  Faces are aggregated with weights ``cov * exp(cov * inv_depth / gamma)`` (a soft z-buffer),
  the silhouette is ``mask = 1 - prod_f (1 - cov_f)``.
"""
from __future__ import annotations

import torch
from torch import nn

from ipsb.backbone.interfaces import Renderer, RenderOutput
from ipsb.backbone.toy import world


class SoftRenderer(Renderer):
    """Camera-space mesh -> :class:`RenderOutput` (image/mask in [0,1], depth = distance, 0 off-face).

    Args: ``image_size`` output side in pixels (a multiple of ``tile``); ``focal`` NDC focal
    length (``x_ndc = focal*x/-z``); ``sigma`` edge softness in pixels; ``gamma`` soft z-buffer
    temperature on inverse depth normalised over ``[near, far]``; ``tile`` tile side in pixels;
    ``faces_per_tile`` faces considered per tile.
    """

    #: coverage = sigmoid(distance / sigma + shift): 0.88 on an edge, so the two triangles sharing an
    #: edge give mask 0.99 there instead of 0.75 (no visible wireframe); silhouettes grow by 2 sigma.
    COVERAGE_SHIFT = 2.0

    def __init__(self, image_size: int = world.RESOLUTION, focal: float = world.FOCAL,
                 sigma: float = 0.35, gamma: float = 0.02, near: float = 2.0, far: float = 7.0,
                 tile: int = 4, faces_per_tile: int = 16):
        super().__init__()
        if image_size <= 0 or sigma <= 0 or gamma <= 0 or not 0 < near < far or tile <= 0 \
                or image_size % tile or faces_per_tile <= 0:
            raise ValueError(f"bad SoftRenderer settings: image_size={image_size} (must be a multiple of "
                             f"tile={tile}), sigma={sigma}, gamma={gamma}, near={near}, far={far}, "
                             f"faces_per_tile={faces_per_tile}")
        self.image_size, self.focal, self.sigma, self.gamma = int(image_size), float(focal), float(sigma), float(gamma)
        self.near, self.far, self.tile, self.faces_per_tile = float(near), float(far), int(tile), int(faces_per_tile)
        self.checkpoint_path = None
        n = self.image_size // self.tile
        c = torch.arange(self.image_size, dtype=torch.float32) + 0.5
        py, px = torch.meshgrid(c, c, indexing="ij")
        pix = torch.stack([px, py, torch.ones_like(px)], -1)                      # [S,S,3]
        pix = pix.view(n, self.tile, n, self.tile, 3).permute(0, 2, 1, 3, 4).reshape(n * n, self.tile ** 2, 3)
        self.register_buffer("pix", pix, persistent=False)                        # [T,t*t,3]
        self.register_buffer("tile_centers", pix[:, :, :2].mean(1), persistent=False)  # [T,2]

    def project(self, vertices: torch.Tensor) -> torch.Tensor:
        """Camera-space ``[B,N,3]`` -> pixel coordinates ``[B,N,2]`` (v down)."""
        ndc = self.focal * vertices[..., :2] / (-vertices[..., 2:3])
        return torch.stack([(ndc[..., 0] + 1) * 0.5 * self.image_size,
                            (1 - ndc[..., 1]) * 0.5 * self.image_size], -1)

    def _face_planes(self, vertices, faces, colors):
        """Per-face packed data ``[B,F,46]``: edge and box distances / sigma as (a,b,c) coefficients of
        ``a px + b py + c`` (21), r,g,b,depth,inverse-depth-logit planes (15), their per-face min (5) and
        max (5); centroids ``[B,F,2]`` pixels; twice the signed area ``[B,F]`` (> 0 for front faces)."""
        uv = self.project(vertices)
        depth = -vertices[..., 2]
        tri, tz, tc = uv[:, faces], depth[:, faces], colors[:, faces]             # [B,F,3,2] [B,F,3] [B,F,3,3]
        # edge i (opposite vertex i) from v[i+1] to v[i+2]: E_i(p) = a px + b py + c > 0 inside a
        # front face (counter-clockwise seen from the camera = clockwise in v-down pixels).
        vj, vk = tri.roll(-1, dims=2), tri.roll(-2, dims=2)
        a = vk[..., 1] - vj[..., 1]
        b = vj[..., 0] - vk[..., 0]
        c = -(a * vj[..., 0] + b * vj[..., 1])
        length = torch.sqrt(a * a + b * b + 1e-12)
        area2 = a[..., 0] * tri[..., 0, 0] + b[..., 0] * tri[..., 0, 1] + c[..., 0]   # 2 * signed area
        coef = torch.stack([a, b, c], -2)                                         # [B,F,3abc,3edge]
        # bounding-box half-planes (px - xmin, xmax - px, ...): they never cut into the triangle, but
        # stop a sliver triangle's edge lines from covering pixels far along their extensions
        lo, hi = tri.amin(2), tri.amax(2)                                         # [B,F,2]
        one, zero = torch.ones_like(lo[..., 0]), torch.zeros_like(lo[..., 0])
        box = torch.stack([torch.stack([one, zero, -lo[..., 0]], -1), torch.stack([-one, zero, hi[..., 0]], -1),
                           torch.stack([zero, one, -lo[..., 1]], -1), torch.stack([zero, -one, hi[..., 1]], -1)], -1)
        edge = torch.cat([coef / length[..., None, :], box], -1) / self.sigma    # [B,F,3abc,7]
        safe = torch.where(area2.abs() < 1e-6, torch.full_like(area2, 1e-6), area2)
        bary = coef / safe[..., None, None]                                       # b_i(p) planes
        inv = (self.far - tz) / ((self.far - self.near) * self.gamma)
        attrs = torch.stack([tc[..., 0], tc[..., 1], tc[..., 2], tz, inv], -1)    # [B,F,3vert,5]
        planes = bary @ attrs                                                     # [B,F,3abc,5]
        # per-face attribute range: a plane value is clamped into it, so a sliver triangle's
        # extrapolated plane cannot leak extreme colours/depths into neighbouring pixels
        packed = torch.cat([edge.flatten(-2), planes.flatten(-2), attrs.amin(2), attrs.amax(2)], -1)
        return packed, tri.mean(2), area2

    def forward(self, vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor) -> RenderOutput:
        """vertices ``[B,N,3]`` camera space (z < 0), faces ``[F,3]`` long, colors ``[B,N,3]`` in [0,1]."""
        if vertices.dim() != 3 or vertices.shape[-1] != 3 or colors.shape != vertices.shape:
            raise ValueError(f"expected vertices and colors [B,N,3] of equal shape, got "
                             f"{list(vertices.shape)} and {list(colors.shape)}")
        if faces.dim() != 2 or faces.shape[1] != 3:
            raise ValueError(f"expected faces [F,3], got {list(faces.shape)}")
        B, S, T, Q = vertices.shape[0], self.image_size, self.pix.shape[0], self.pix.shape[1]
        K = min(self.faces_per_tile, faces.shape[0])
        packed, centroid, area2 = self._face_planes(vertices, faces, colors)
        with torch.no_grad():
            dist = (centroid[:, None] - self.tile_centers[None, :, None]).abs().amax(-1)  # [B,T,F]
            dist = dist + 1e4 * (area2 <= 0).to(dist.dtype)[:, None]
            idx = dist.topk(K, dim=-1, largest=False).indices                    # [B,T,K]
        F_, D = faces.shape[0], packed.shape[-1]
        sel = packed[:, None].expand(B, T, F_, D).gather(2, idx[..., None].expand(B, T, K, D))
        sel = sel.permute(0, 1, 3, 2).contiguous()                                # [B,T,46,K]
        edge = sel[:, :, :21].reshape(B, T, 3, 7 * K)
        x = (self.pix @ edge).view(B, T, Q, 7, K).amin(dim=3)                      # [B,T,Q,K]
        front = (area2 > 0).to(x.dtype)[:, None].expand(B, T, F_).gather(2, idx)    # back faces: no coverage
        cov = torch.sigmoid(x + self.COVERAGE_SHIFT) * front[:, :, None]
        planes = sel[:, :, 21:36].reshape(B, T, 3, 5 * K)
        val = (self.pix @ planes).view(B, T, Q, 5, K)                              # per-face r,g,b,depth,inv
        val = torch.clamp(val, sel[:, :, None, 36:41], sel[:, :, None, 41:46])
        w = cov * torch.exp(cov * val[:, :, :, 4])
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
        out = (val[:, :, :, :4] * w[:, :, :, None]).sum(-1)                       # [B,T,Q,4]
        mask = 1 - torch.exp(torch.log1p(-cov.clamp(max=1 - 1e-6)).sum(-1, keepdim=True))
        n, t = S // self.tile, self.tile
        to_map = lambda v: v.view(B, n, n, t, t, -1).permute(0, 5, 1, 3, 2, 4).reshape(B, -1, S, S)
        return RenderOutput(image=to_map(out[..., :3].clamp(0.0, 1.0)), mask=to_map(mask),
                            depth=to_map(out[..., 3:4].clamp(self.near, self.far) * mask))
