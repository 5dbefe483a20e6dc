"""Differentiable mesh renderer on pytorch3d: per-vertex colours -> image, face mask and depth.

Camera convention = :class:`~ipsb.backbone.face_model.BFMFaceModel`'s (Deep3DFaceRecon's): vertices are
in camera space with the camera looking down the axis of **positive** depth ``z`` (Deep3D's
``z = camera_distance - z_world``), x right and y up. A vertex projects to Deep3D pixel coordinates
``(u, v) = (f x/z + cx, f y/z + cy)`` (y up) and is drawn at image pixel index column ``u`` and row
``S-1-v``, the same place where ``BFMFaceModel`` puts its ``landmarks``.

We do the projection ourselves and hand pytorch3d's ``rasterize_meshes`` the vertices in its NDC
(+x left, +y up, z = view depth, which is what ``MeshRasterizer`` does after its camera transform),
because pytorch3d's camera classes use another screen convention and would need two flips to match
Deep3D. Colours are interpolated with perspective-correct barycentrics
(``interpolate_face_attributes``). Gradients reach colours, and vertices through the barycentrics
(the hard mask itself has zero gradient; ``blur_radius``/``faces_per_pixel`` are exposed for soft
rasterisation experiments). pytorch3d is imported lazily so the rest of ipsb works without it.

pytorch3d's coarse-to-fine binning is CUDA-only; on CPU it tests every face against every pixel,
which takes minutes for the real BFM (70k faces) at 224. ``tile_size`` therefore splits the image
into tiles and rasterises each with only the faces whose bounding box touches it (our own binning;
the result is the same rasterisation, up to float rounding on exact edge hits). By default tiles are
used on CPU for meshes over 2,000 faces: a 70k-face mesh at 224 px took ~5 s instead of ~80 s here.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ipsb.backbone.interfaces import Renderer, RenderOutput


def _pair(x: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(x, (int, float)):
        return float(x), float(x)
    a, b = x
    return float(a), float(b)


class MeshRenderer(Renderer):
    """Rasterise camera-space meshes with per-vertex colours.

    Args:
        image_size: output side S (square images).
        focal: focal length in pixels (Deep3D: 1015).
        center: principal point in Deep3D pixel coordinates, one value or ``(cx, cy)`` (Deep3D: 112).
        znear, zfar: depth range kept; faces outside are culled (Deep3D: 5, 15).
        blur_radius, faces_per_pixel, bin_size, max_faces_per_bin, cull_backfaces: passed to
            pytorch3d's ``rasterize_meshes``.
        tile_size: rasterise in tiles of this side (see module docstring); ``None`` = automatic
            (16 on CPU when the mesh has over 2,000 faces, else the whole image at once); 0 = never.
    """

    def __init__(self, image_size: int = 224, focal: float = 1015.0, center: float | Sequence[float] = 112.0,
                 znear: float = 5.0, zfar: float = 15.0, blur_radius: float = 0.0, faces_per_pixel: int = 1,
                 bin_size: Optional[int] = None, max_faces_per_bin: Optional[int] = None,
                 cull_backfaces: bool = False, tile_size: Optional[int] = None):
        super().__init__()
        if image_size <= 0 or focal <= 0 or not 0 < znear < zfar:
            raise ValueError(f"need image_size > 0, focal > 0 and 0 < znear < zfar; got image_size={image_size}, "
                             f"focal={focal}, znear={znear}, zfar={zfar}")
        self.image_size = int(image_size)
        self.focal = float(focal)
        self.center = _pair(center)
        self.znear, self.zfar = float(znear), float(zfar)
        self.blur_radius = float(blur_radius)
        self.faces_per_pixel = int(faces_per_pixel)
        self.bin_size = bin_size
        self.max_faces_per_bin = max_faces_per_bin
        self.cull_backfaces = cull_backfaces
        self.tile_size = tile_size

    def to_ndc(self, vertices: torch.Tensor) -> torch.Tensor:
        """Camera-space ``[B,N,3]`` -> pytorch3d NDC ``[B,N,3]`` (x left, y up, z = depth)."""
        s = self.image_size
        z = vertices[..., 2:]
        u = self.focal * vertices[..., :1] / z + self.center[0]  # pixel index column
        v = self.focal * vertices[..., 1:2] / z + self.center[1]  # y-up; row index = s-1-v
        # pixel index column i has its centre at NDC x = 1 - (2i+1)/s; row j at y = 1 - (2j+1)/s
        x_ndc = 1 - (2 * u + 1) / s
        y_ndc = 1 - (2 * (s - 1 - v) + 1) / s
        return torch.cat([x_ndc, y_ndc, z], -1)

    def _check(self, vertices, faces, colors):
        if vertices.dim() != 3 or vertices.shape[-1] != 3:
            raise ValueError(f"vertices must be [B,N,3], got {list(vertices.shape)}")
        if faces.dim() != 2 or faces.shape[-1] != 3 or faces.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"faces must be an integer tensor [F,3], got {list(faces.shape)} {faces.dtype}")
        if colors.shape[:2] != vertices.shape[:2] or colors.dim() != 3:
            raise ValueError(f"colors must be [B,N,C] matching vertices {list(vertices.shape[:2])}, "
                             f"got {list(colors.shape)}")

    def forward(self, vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor) -> RenderOutput:
        """vertices ``[B,N,3]`` camera space, faces ``[F,3]`` long, colors ``[B,N,C]`` (C=3: RGB in [0,1])
        -> image ``[B,C,S,S]`` (0 off the mesh), mask ``[B,1,S,S]`` in {0,1}, depth ``[B,1,S,S]`` (0 off)."""
        from pytorch3d.ops import interpolate_face_attributes

        self._check(vertices, faces, colors)
        b = vertices.shape[0]
        faces = faces.to(device=vertices.device, dtype=torch.int64)
        ndc = self.to_ndc(vertices).float()
        tile = self.tile_size
        if tile is None:
            tile = 16 if vertices.device.type == "cpu" and faces.shape[0] > 2000 else 0
        if 0 < tile < self.image_size:
            pix_to_face, zbuf, bary = self._rasterize_tiled(ndc, faces, tile)
        else:
            pix_to_face, zbuf, bary = self._rasterize(ndc, [faces] * b, self.image_size)
        # packed face ids (sample-major, F per sample) -> per-face vertex colours [B*F,3,C]
        offsets = (torch.arange(b, device=faces.device) * vertices.shape[1])[:, None, None]
        face_colors = colors.reshape(-1, colors.shape[-1])[(faces[None] + offsets).reshape(-1, 3)]
        # keep only the nearest face; depth-range culling as a near/far clip
        p2f, z, bc = pix_to_face[..., :1], zbuf[..., :1], bary[..., :1, :]
        inside = (p2f >= 0) & (z >= self.znear) & (z <= self.zfar)
        p2f = torch.where(inside, p2f, torch.full_like(p2f, -1))
        img = interpolate_face_attributes(p2f, bc, face_colors.to(bc.dtype))[..., 0, :]  # [B,S,S,C]
        mask = inside.to(vertices.dtype)
        depth = torch.where(inside, z, torch.zeros_like(z))
        return RenderOutput(image=img.permute(0, 3, 1, 2).to(colors.dtype),
                            mask=mask.permute(0, 3, 1, 2), depth=depth.permute(0, 3, 1, 2).to(vertices.dtype))

    def _rasterize(self, ndc: torch.Tensor, faces: list, size: int):
        """pytorch3d rasterisation of NDC meshes (one face list per sample) at ``size`` px."""
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes

        meshes = Meshes(verts=list(ndc), faces=faces)
        p2f, z, bary, _ = rasterize_meshes(
            meshes, image_size=size, blur_radius=self.blur_radius,
            faces_per_pixel=self.faces_per_pixel, bin_size=self.bin_size,
            max_faces_per_bin=self.max_faces_per_bin, perspective_correct=True,
            cull_backfaces=self.cull_backfaces, z_clip_value=None)
        return p2f, z, bary

    def _rasterize_tiled(self, ndc: torch.Tensor, faces: torch.Tensor, tile: int):
        """Same outputs as :meth:`_rasterize` at full size, tile by tile with bbox-selected faces."""
        b, s, nf = ndc.shape[0], self.image_size, faces.shape[0]
        k = self.faces_per_pixel
        with torch.no_grad():  # face bounding boxes in pixel-index units (col, row)
            tri = ndc[:, faces]  # [B,F,3,3]
            col, row = (s * (1 - tri[..., 0]) - 1) / 2, (s * (1 - tri[..., 1]) - 1) / 2
            margin = 1.0 + self.blur_radius * s
            cmin, cmax = col.min(-1).values - margin, col.max(-1).values + margin
            rmin, rmax = row.min(-1).values - margin, row.max(-1).values + margin
        rows = []
        for r0 in range(0, s, tile):
            cols = []
            for c0 in range(0, s, tile):
                sel = (cmax >= c0) & (cmin <= c0 + tile - 1) & (rmax >= r0) & (rmin <= r0 + tile - 1)
                ids = [torch.nonzero(sel[i]).flatten() for i in range(b)]
                if all(len(i) == 0 for i in ids):
                    cols.append((torch.full((b, tile, tile, k), -1, dtype=torch.int64, device=ndc.device),
                                 ndc.new_full((b, tile, tile, k), -1.0), ndc.new_full((b, tile, tile, k, 3), -1.0)))
                    continue
                # tile-local NDC: pixel-index column c -> x = 1 - (2(c - c0) + 1)/tile
                c = (s * (1 - ndc[..., :1]) - 1) / 2 - c0
                r = (s * (1 - ndc[..., 1:2]) - 1) / 2 - r0
                local = torch.cat([1 - (2 * c + 1) / tile, 1 - (2 * r + 1) / tile, ndc[..., 2:]], -1)
                p2f, z, bary = self._rasterize(local, [faces[i] for i in ids], tile)
                glob = torch.cat([i * nf + ids[i] for i in range(b)])  # tile packed id -> global packed id
                p2f = torch.where(p2f >= 0, glob[p2f.clamp(min=0)], p2f)
                cols.append((p2f, z, bary))
            rows.append(tuple(torch.cat([t[j] for t in cols], 2) for j in range(3)))
        return tuple(torch.cat([t[j] for t in rows], 1)[:, :s, :s] for j in range(3))

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, focal={self.focal}, center={self.center}, "
                f"znear={self.znear}, zfar={self.zfar}")
