"""ToyFaceModel: the toy world's procedural 3D face model (a small 3DMM).

Mesh: a front half-ellipsoid (radii 0.8 x 1.0 x 0.7, nose towards +z) sampled on a 15 x 15 grid of
(longitude, latitude) = 225 vertices and 392 triangles. Each vertex has "face coordinates"
``(s, t)`` in [-1,1]^2 (s: left-right, t: bottom-top) used to place features.

Coefficients ``[B,30]`` (layout in :mod:`ipsb.backbone.toy.world`):

* ``id`` (8): width, height, depth scalings; nose size; chin length; cheek fullness; forehead;
  eye-socket depth (smooth vertex displacements).
* ``exp`` (6, localised): mouth open (lower face down), smile (mouth corners up), mouth wide
  (corners out), brows raised, frown (inner brows down and in), jaw sideways.
* ``tex`` (6): red / green / blue skin tone shifts, lip redness, brow darkness, a left-right tone
  gradient. The mean albedo has dark eyes, brows and a dark red mouth.
* ``angle`` (3): yaw, pitch, roll in radians; ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``.
* ``gamma`` (4): ambient level ``a`` (diffuse = 1 - a), light direction x, y (z = 1, normalised),
  warm tint (red up / blue down by 10 % per unit). Lambertian shading on vertex normals.
* ``trans`` (3): translation added after rotation, before the camera offset.

Vertex normals are computed with a fixed vertex-face incidence matrix (a matmul rather than a
scatter), so the whole forward is vmap/jacrev friendly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ipsb.backbone.interfaces import FaceGeometry, FaceModel
from ipsb.backbone.toy import world

GRID = 15
RADII = (0.8, 1.0, 0.7)
LON_MAX = math.radians(75.0)
LAT_MAX = math.radians(65.0)

#: Landmark names -> face coordinates (s, t); the nearest grid vertex is used.
LANDMARKS = {
    "brow_l": (-0.43, 0.43), "brow_r": (0.43, 0.43),
    "eye_l": (-0.43, 0.14), "eye_r": (0.43, 0.14),
    "nose": (0.0, -0.14), "mouth_l": (-0.29, -0.43), "mouth_r": (0.29, -0.43),
    "mouth_c": (0.0, -0.43), "chin": (0.0, -0.86), "cheek_l": (-0.71, -0.29), "cheek_r": (0.71, -0.29),
}


def _gauss(s, t, cs, ct, ws, wt):
    return torch.exp(-((s - cs) / ws) ** 2 - ((t - ct) / wt) ** 2)


def _grid():
    """Vertices ``[N,3]``, faces ``[F,3]`` (counter-clockwise seen from +z), coords ``[N,2]``."""
    s = torch.linspace(-1, 1, GRID, dtype=torch.float64)
    tt, ss = torch.meshgrid(s, s, indexing="ij")           # rows: t (bottom->top), cols: s
    ss, tt = ss.reshape(-1), tt.reshape(-1)
    lon, lat = ss * LON_MAX, tt * LAT_MAX
    rx, ry, rz = RADII
    verts = torch.stack([rx * torch.sin(lon) * torch.cos(lat), ry * torch.sin(lat),
                         rz * torch.cos(lon) * torch.cos(lat)], -1)
    faces = []
    for r in range(GRID - 1):
        for c in range(GRID - 1):
            a, b = r * GRID + c, r * GRID + c + 1
            d, e = (r + 1) * GRID + c, (r + 1) * GRID + c + 1
            faces += [(a, b, e), (a, e, d)]                # CCW in the (x right, y up) plane
    return verts, torch.tensor(faces, dtype=torch.long), torch.stack([ss, tt], -1)


class ToyFaceModel(FaceModel):
    """The toy 3DMM: coefficients ``[B,30]`` -> :class:`FaceGeometry` in camera space.

    ``vertices [B,225,3]`` camera space (camera at the origin looking down -z),
    ``colors``/``albedo [B,225,3]`` in [0,1], ``landmarks [B,11,2]`` pixels of ``image_size``.
    Deterministic: the definition has no random parts (``seed`` is kept for config symmetry).
    """

    def __init__(self, image_size: int = world.RESOLUTION, seed: int = 0):
        super().__init__()
        self.image_size = int(image_size)
        self.seed = seed
        self.coeff_groups = world.coeff_slices()
        self.num_coeffs = world.NUM_COEFFS
        self.checkpoint_path = None
        verts, faces, st = _grid()
        s, t = st[:, 0], st[:, 1]
        x, y, z = verts.unbind(-1)
        normal0 = verts / torch.tensor(RADII, dtype=verts.dtype) ** 2
        normal0 = normal0 / normal0.norm(dim=-1, keepdim=True)
        nose = 0.32 * _gauss(s, t, 0.0, -0.07, 0.13, 0.22)
        mean = verts + nose[:, None] * torch.tensor([0.0, 0.0, 1.0], dtype=verts.dtype)
        zero = torch.zeros_like(x)
        lower = torch.sigmoid((-0.3 - t) / 0.1) * torch.exp(-(s / 0.7) ** 2)
        id_basis = [
            torch.stack([0.12 * x, zero, zero], -1),
            torch.stack([zero, 0.12 * y, zero], -1),
            torch.stack([zero, zero, 0.12 * z], -1),
            0.12 * _gauss(s, t, 0.0, -0.07, 0.15, 0.25)[:, None] * torch.tensor([0.0, -0.1, 1.0], dtype=verts.dtype),
            0.12 * torch.sigmoid((-0.6 - t) / 0.1)[:, None] * torch.tensor([0.0, -1.0, 0.3], dtype=verts.dtype),
            0.1 * (_gauss(s, t, -0.55, -0.25, 0.25, 0.25) + _gauss(s, t, 0.55, -0.25, 0.25, 0.25))[:, None] * normal0,
            0.1 * torch.sigmoid((t - 0.55) / 0.1)[:, None] * normal0,
            -0.08 * (_gauss(s, t, -0.43, 0.14, 0.2, 0.15) + _gauss(s, t, 0.43, 0.14, 0.2, 0.15))[:, None] * normal0,
        ]
        corner_l, corner_r = _gauss(s, t, -0.3, -0.43, 0.3, 0.25), _gauss(s, t, 0.3, -0.43, 0.3, 0.25)
        brows = _gauss(s, t, -0.43, 0.45, 0.4, 0.3) + _gauss(s, t, 0.43, 0.45, 0.4, 0.3)
        inner = _gauss(s, t, -0.25, 0.4, 0.3, 0.3), _gauss(s, t, 0.25, 0.4, 0.3, 0.3)
        exp_basis = [
            0.3 * lower[:, None] * torch.tensor([0.0, -1.0, -0.2], dtype=verts.dtype),
            0.3 * (corner_l + corner_r)[:, None] * torch.tensor([0.0, 1.0, 0.2], dtype=verts.dtype),
            0.3 * torch.stack([corner_r - corner_l, zero, zero], -1),
            0.3 * brows[:, None] * torch.tensor([0.0, 1.0, 0.2], dtype=verts.dtype),
            0.25 * torch.stack([inner[0] - inner[1], -(inner[0] + inner[1]), zero], -1),
            0.35 * lower[:, None] * torch.tensor([1.0, 0.0, 0.0], dtype=verts.dtype),
        ]
        skin = torch.tensor([0.82, 0.62, 0.52], dtype=verts.dtype)
        eyes = _gauss(s, t, -0.43, 0.14, 0.17, 0.12) + _gauss(s, t, 0.43, 0.14, 0.17, 0.12)
        mouth = _gauss(s, t, 0.0, -0.43, 0.3, 0.12)
        brow_c = _gauss(s, t, -0.43, 0.43, 0.2, 0.08) + _gauss(s, t, 0.43, 0.43, 0.2, 0.08)
        albedo = skin.expand(len(s), 3).clone()
        albedo = albedo * (1 - 0.8 * eyes.clamp(max=1)[:, None])
        albedo = albedo * (1 - 0.5 * brow_c.clamp(max=1)[:, None])
        albedo = albedo + mouth[:, None] * (torch.tensor([0.55, 0.12, 0.15], dtype=verts.dtype) - albedo)
        one = torch.ones_like(s)
        tex_basis = [
            torch.stack([0.08 * one, zero, zero], -1), torch.stack([zero, 0.08 * one, zero], -1),
            torch.stack([zero, zero, 0.08 * one], -1),
            mouth[:, None] * torch.tensor([0.15, -0.06, -0.06], dtype=verts.dtype),
            -0.12 * brow_c[:, None] * albedo,
            0.06 * s[:, None] * torch.tensor([1.0, 1.0, 1.0], dtype=verts.dtype),
        ]
        f = torch.float32
        self.register_buffer("mean_shape", mean.to(f), persistent=False)
        self.register_buffer("id_basis", torch.stack(id_basis, 0).to(f), persistent=False)     # [8,N,3]
        self.register_buffer("exp_basis", torch.stack(exp_basis, 0).to(f), persistent=False)   # [6,N,3]
        self.register_buffer("mean_albedo", albedo.to(f), persistent=False)
        self.register_buffer("tex_basis", torch.stack(tex_basis, 0).to(f), persistent=False)   # [6,N,3]
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("face_coords", st.to(f), persistent=False)                       # [N,2]
        inc = torch.zeros(len(s), len(faces), dtype=f)
        for k in range(3):
            inc[faces[:, k], torch.arange(len(faces))] = 1.0
        self.register_buffer("incidence", inc, persistent=False)                              # [N,F]
        idx = [int(((st - torch.tensor(p, dtype=st.dtype)) ** 2).sum(-1).argmin()) for p in LANDMARKS.values()]
        self.register_buffer("landmark_index", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.landmark_names = tuple(LANDMARKS)

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]

    def shape(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """id ``[B,8]``, exp ``[B,6]`` -> model-space vertices ``[B,225,3]`` (no pose)."""
        return (self.mean_shape + torch.einsum("bk,knc->bnc", id_coeff, self.id_basis)
                + torch.einsum("bk,knc->bnc", exp_coeff, self.exp_basis))

    def texture(self, tex_coeff: torch.Tensor) -> torch.Tensor:
        """tex ``[B,6]`` -> albedo ``[B,225,3]`` in [0,1]."""
        return (self.mean_albedo + torch.einsum("bk,knc->bnc", tex_coeff, self.tex_basis)).clamp(0.0, 1.0)

    @staticmethod
    def rotation(angle: torch.Tensor) -> torch.Tensor:
        """angle ``[B,3]`` (yaw, pitch, roll) radians -> ``[B,3,3]`` = Rz(roll) Ry(yaw) Rx(pitch)."""
        yaw, pitch, roll = angle.unbind(-1)
        o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
        cx, sx, cy, sy, cz, sz = pitch.cos(), pitch.sin(), yaw.cos(), yaw.sin(), roll.cos(), roll.sin()
        rx = torch.stack([o, z, z, z, cx, -sx, z, sx, cx], -1).reshape(-1, 3, 3)
        ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(-1, 3, 3)
        rz = torch.stack([cz, -sz, z, sz, cz, z, z, z, o], -1).reshape(-1, 3, 3)
        return rz @ ry @ rx

    def vertex_normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """vertices ``[B,N,3]`` -> unit normals ``[B,N,3]`` (area-weighted face normals)."""
        v0, v1, v2 = (vertices[:, self.faces[:, k]] for k in range(3))
        fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
        vn = torch.einsum("nf,bfc->bnc", self.incidence, fn)
        return vn / (vn.norm(dim=-1, keepdim=True) + 1e-8)

    def to_camera(self, model_vertices: torch.Tensor, angle: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """Model-space ``[B,N,3]`` -> camera space (rotate, translate, push to ``z = -CAM_DIST``)."""
        cam = torch.tensor([0.0, 0.0, -world.CAM_DIST], dtype=model_vertices.dtype, device=model_vertices.device)
        return model_vertices @ self.rotation(angle).transpose(1, 2) + trans[:, None] + cam

    def project(self, vertices: torch.Tensor) -> torch.Tensor:
        """Camera-space ``[B,N,3]`` -> pixel coordinates ``[B,N,2]`` at ``image_size``."""
        ndc = world.FOCAL * vertices[..., :2] / (-vertices[..., 2:3])
        return torch.stack([(ndc[..., 0] + 1) * 0.5 * self.image_size,
                            (1 - ndc[..., 1]) * 0.5 * self.image_size], -1)

    def shade(self, albedo: torch.Tensor, normals: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """Lambertian shading: albedo, camera-space normals ``[B,N,3]``, gamma ``[B,4]`` -> colours in [0,1]."""
        amb, lx, ly, warm = gamma.unbind(-1)
        light = torch.stack([lx, ly, torch.ones_like(lx)], -1)
        light = light / light.norm(dim=-1, keepdim=True)
        diffuse = torch.relu(torch.einsum("bnc,bc->bn", normals, light))
        shading = amb[:, None] + (1 - amb[:, None]) * diffuse
        tint = torch.stack([1 + 0.1 * warm, torch.ones_like(warm), 1 - 0.1 * warm], -1)
        return (albedo * shading[..., None] * tint[:, None]).clamp(0.0, 1.0)

    def forward(self, coeffs: torch.Tensor) -> FaceGeometry:
        """coeffs ``[B,30]`` -> posed, shaded :class:`FaceGeometry` (camera space)."""
        g = self.split(coeffs)
        model = self.shape(g["id"], g["exp"])
        verts = self.to_camera(model, g["angle"], g["trans"])
        albedo = self.texture(g["tex"])
        colors = self.shade(albedo, self.vertex_normals(verts), g["gamma"])
        landmarks = self.project(verts[:, self.landmark_index])
        return FaceGeometry(vertices=verts, colors=colors, albedo=albedo, landmarks=landmarks)
