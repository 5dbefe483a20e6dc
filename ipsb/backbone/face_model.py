"""The Basel Face Model as Deep3DFaceRecon uses it: shape, albedo, SH shading, pose, camera, landmarks.

Coefficients ``[B,257]`` = id 80 | exp 64 | tex 80 | angle 3 (radians, about x, y, z) | gamma 27
(SH lighting, channel-major r9 g9 b9) | trans 3. Conventions (Deep3DFaceRecon_pytorch ``models/bfm.py``):

* model space in decimetres; the mean shape is recentred (vertex mean subtracted) when ``recenter``;
* rotation ``R = (Rz Ry Rx)^T`` applied to row vectors, ``v @ R + trans``;
* camera at ``z = camera_distance`` looking down -z: camera-space ``(x, y, camera_distance - z)``, so
  camera-space z is the positive depth (about 10);
* projection ``(f x/z + c, f y/z + c)`` with the y axis **up** (Deep3D's landmark convention);
* shading: 9-band SH with ``init_lit`` added to gamma, normals from the un-rotated shape, rotated.

:class:`BFMFaceModel` returns :class:`~ipsb.backbone.interfaces.FaceGeometry` whose ``landmarks`` are in
**image pixel-index coordinates** (x right, y down, pixel centres at integers): ``(x, S-1-y_up)``, the
inverse of the ``H-1-y`` flip Deep3D applies to detected landmarks, so they line up with dlib landmarks
and with :class:`~ipsb.backbone.renderer.MeshRenderer` images. :meth:`BFMFaceModel.project` gives the
raw y-up projection. All forward code is out-of-place and free of data-dependent control flow, so it
works under ``torch.func`` (vmap/jacrev/jvp).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ipsb.backbone.bfm_io import load_bfm
from ipsb.backbone.interfaces import FaceGeometry, FaceModel
from ipsb.checkpoints import resolve_checkpoint

DEFAULT_BFM = "BFM_model_front.mat"
#: Deep3D's SH constants: a = [pi, 2pi/sqrt(3), 2pi/sqrt(8)], c = [1/sqrt(4pi), sqrt(3)/sqrt(4pi), 3sqrt(5)/sqrt(12pi)].
SH_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
SH_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))
DEFAULT_INIT_LIT = (0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def euler_rotation(angles: torch.Tensor) -> torch.Tensor:
    """angles ``[B,3]`` radians (about x, y, z) -> ``[B,3,3]`` = ``(Rz Ry Rx)^T`` for row vectors."""
    x, y, z = angles[:, 0], angles[:, 1], angles[:, 2]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], -1).reshape(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1).reshape(-1, 3, 3)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals ``[B,N,3]`` -> the 9 SH basis values ``[B,N,9]`` (Deep3D's signs and constants)."""
    a, c = SH_A, SH_C
    nx, ny, nz = normals[..., 0], normals[..., 1], normals[..., 2]
    return torch.stack([
        a[0] * c[0] * torch.ones_like(nx),
        -a[1] * c[1] * ny,
        a[1] * c[1] * nz,
        -a[1] * c[1] * nx,
        a[2] * c[2] * nx * ny,
        -a[2] * c[2] * ny * nz,
        0.5 * a[2] * c[2] / math.sqrt(3.0) * (3 * nz ** 2 - 1),
        -a[2] * c[2] * nx * nz,
        0.5 * a[2] * c[2] * (nx ** 2 - ny ** 2),
    ], -1)


class BFMFaceModel(FaceModel):
    """Deep3DFaceRecon's parametric BFM (``BFM_model_front.mat``) as a :class:`FaceModel`.

    Args:
        path_or_name: the ``.mat`` file, a folder holding ``BFM_model_front.mat``, or a registry name
            resolved in the checkpoint folders (:func:`ipsb.checkpoints.resolve_checkpoint`).
        recenter, camera_distance, init_lit, focal, center: Deep3D's constructor defaults.
        image_size: side of the image the landmarks refer to (224 for Deep3D).
        cache: read/write the ``<file>.ipsb.pt`` tensor cache next to the ``.mat``.

    The BFM arrays are non-persistent buffers: they move with ``.to(device)`` but stay out of
    state dicts (stage checkpoints record only the file's hash).
    """

    coeff_groups = {"id": (0, 80), "exp": (80, 144), "tex": (144, 224), "angle": (224, 227),
                    "gamma": (227, 254), "trans": (254, 257)}
    num_coeffs = 257

    def __init__(self, path_or_name: str | os.PathLike = DEFAULT_BFM, recenter: bool = True,
                 camera_distance: float = 10.0, init_lit: Sequence[float] = DEFAULT_INIT_LIT,
                 focal: float = 1015.0, center: float = 112.0, image_size: int = 224, cache: bool = True):
        super().__init__()
        p = Path(path_or_name).expanduser()
        if p.is_dir():
            p = p / DEFAULT_BFM
        self.path = resolve_checkpoint(p)
        self._setup(load_bfm(self.path, cache=cache), recenter, camera_distance, init_lit, focal, center,
                    image_size)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], recenter: bool = True, camera_distance: float = 10.0,
                     init_lit: Sequence[float] = DEFAULT_INIT_LIT, focal: float = 1015.0, center: float = 112.0,
                     image_size: int = 224) -> "BFMFaceModel":
        """Build from the dict of :func:`ipsb.backbone.bfm_io.load_bfm` (no file)."""
        self = cls.__new__(cls)
        FaceModel.__init__(self)
        self.path = None
        self._setup(tensors, recenter, camera_distance, init_lit, focal, center, image_size)
        return self

    def _setup(self, t, recenter, camera_distance, init_lit, focal, center, image_size):
        if len(init_lit) != 9:
            raise ValueError(f"init_lit must have 9 SH coefficients, got {len(init_lit)}")
        mean_shape = t["mean_shape"].float()
        if recenter:
            v = mean_shape.reshape(-1, 3)
            mean_shape = (v - v.mean(0, keepdim=True)).reshape(-1)
        self.camera_distance = float(camera_distance)
        self.focal = float(focal)
        self.center = float(center)
        self.image_size = int(image_size)
        self.register_buffer("mean_shape", mean_shape, persistent=False)
        for k in ("id_base", "exp_base", "mean_tex", "tex_base"):
            self.register_buffer(k, t[k].float(), persistent=False)
        for k in ("faces", "point_buf", "keypoints"):
            self.register_buffer(k, t[k].long(), persistent=False)
        for k in ("front_mask", "tri_mask", "skin_mask"):
            self.register_buffer(k, t.get(k), persistent=False)
        self.register_buffer("init_lit", torch.tensor(init_lit, dtype=torch.float32), persistent=False)
        # K^T for row vectors: p = v @ persc_proj, pixel = p[:2] / p[2]
        self.register_buffer("persc_proj", torch.tensor(
            [[focal, 0.0, 0.0], [0.0, focal, 0.0], [center, center, 1.0]], dtype=torch.float32), persistent=False)

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.numel() // 3

    # -- the pipeline, step by step -------------------------------------------------------------
    def shape(self, id_coeff: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """id ``[B,80]``, exp ``[B,64]`` -> model-space vertices ``[B,N,3]`` in decimetres."""
        flat = id_coeff @ self.id_base.T + exp_coeff @ self.exp_base.T + self.mean_shape
        return flat.reshape(flat.shape[0], -1, 3)

    def texture(self, tex_coeff: torch.Tensor) -> torch.Tensor:
        """tex ``[B,80]`` -> albedo ``[B,N,3]`` in about [0,1] (BFM 0..255 / 255)."""
        flat = (tex_coeff @ self.tex_base.T + self.mean_tex) / 255.0
        return flat.reshape(flat.shape[0], -1, 3)

    def normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """vertices ``[B,N,3]`` -> unit vertex normals ``[B,N,3]`` (mean of the adjacent face normals)."""
        v1, v2, v3 = (vertices[:, self.faces[:, i]] for i in range(3))
        face_n = F.normalize(torch.linalg.cross(v1 - v2, v2 - v3, dim=-1), dim=-1)
        face_n = torch.cat([face_n, torch.zeros_like(face_n[:, :1])], 1)  # pad row for point_buf's F
        return F.normalize(face_n[:, self.point_buf].sum(2), dim=-1)

    def shade(self, albedo: torch.Tensor, normals: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """albedo ``[B,N,3]``, rotated normals ``[B,N,3]``, gamma ``[B,27]`` -> colours ``[B,N,3]``."""
        g = (gamma.reshape(-1, 3, 9) + self.init_lit).transpose(1, 2)  # [B,9,3]
        return (sh_basis(normals) @ g) * albedo

    def to_camera(self, vertices: torch.Tensor) -> torch.Tensor:
        """World vertices ``[B,N,3]`` -> camera space: ``z -> camera_distance - z`` (out of place)."""
        return torch.cat([vertices[..., :2], self.camera_distance - vertices[..., 2:]], -1)

    def project(self, cam_vertices: torch.Tensor) -> torch.Tensor:
        """Camera-space ``[B,N,3]`` -> Deep3D pixel coordinates ``[B,N,2]`` with the y axis up."""
        p = cam_vertices @ self.persc_proj
        return p[..., :2] / p[..., 2:]

    def to_image_coords(self, points_y_up: torch.Tensor) -> torch.Tensor:
        """Deep3D y-up pixels ``[...,2]`` -> image pixel-index coordinates (y down): ``(x, S-1-y)``."""
        return torch.stack([points_y_up[..., 0], self.image_size - 1 - points_y_up[..., 1]], -1)

    def forward(self, coeffs: torch.Tensor) -> FaceGeometry:
        """coeffs ``[B,257]`` -> camera-space vertices, shaded colours, albedo, landmarks ``[B,68,2]`` px."""
        c = self.split(coeffs)
        shape = self.shape(c["id"], c["exp"])
        rot = euler_rotation(c["angle"])
        verts = self.to_camera(shape @ rot + c["trans"][:, None, :])
        albedo = self.texture(c["tex"])
        colors = self.shade(albedo, self.normals(shape) @ rot, c["gamma"])
        lms = self.to_image_coords(self.project(verts[:, self.keypoints]))
        return FaceGeometry(vertices=verts, colors=colors, albedo=albedo, landmarks=lms)

    def extra_repr(self) -> str:
        return (f"vertices={self.num_vertices}, faces={self.faces.shape[0]}, focal={self.focal}, "
                f"center={self.center}, image_size={self.image_size}, path={self.path}")
