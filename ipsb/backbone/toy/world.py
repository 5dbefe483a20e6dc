"""The fixed, seeded definition of the toy face world: layout constants and seeded helpers.

The toy world is a synthetic face world with known ground truth:

* W+ is ``[B, NUM_WS=10, W_DIM=32]``. :data:`LAYER_GROUPS` names which W+ rows drive what:
  identity shape + albedo from rows 0-3, expression from rows 3-5 (row 3 shared with identity, so
  an identity-preserving expression direction is a real question for the basis), pose (rotation +
  translation) from rows 4-6, lighting from rows 6-7, background from row 8, fine detail from row 9.
* Each 3DMM coefficient group ``g`` is a bounded readout of its rows (see
  :class:`ipsb.backbone.toy.generator.ToyGenerator`): ``coeff_g = CENTER_g + SCALE_g *
  tanh(A_g @ (w_rows - w_mean_rows) / w_std)``, ``A_g`` a seeded matrix with orthonormal rows, so the
  ground-truth subspace of W+ that controls group ``g`` is exactly the row space of ``A_g``.
* The coefficients drive :class:`~ipsb.backbone.toy.face_model.ToyFaceModel` (a procedural face
  mesh), rendered by :class:`~ipsb.backbone.toy.soft_renderer.SoftRenderer` at 64 px.

Coefficient layout (``ToyFaceModel.coeff_groups``, :data:`COEFF_LAYOUT`): id 8, exp 6, tex 6,
angle 3 (yaw, pitch, roll in radians), gamma 4 (ambient, light x, light y, warm tint), trans 3;
30 in all. The depth translation (trans z) keeps the BFM layout but is fixed at 0 (scale 0): at 64 px
a depth change of a few percent of the camera distance only rescales the face, which no image
network can tell from the face-width identity coefficient, so it would be a pose direction that no
regressor can see (an earlier world with trans z in +-0.12 gave it a local derivative of 0.1).

Camera (shared by face model and renderer): the face sits at the origin of model space (y up,
nose towards +z); camera space puts it at ``z = -CAM_DIST`` in front of a pinhole camera at the
origin looking down -z; normalised device coordinates are ``x_ndc = FOCAL * x / -z`` (same for y),
pixels ``u = (x_ndc + 1) / 2 * S``, ``v = (1 - y_ndc) / 2 * S`` (v grows downwards).
"""
from __future__ import annotations

import torch

NUM_WS = 10
W_DIM = 32
Z_DIM = 32
RESOLUTION = 64
FEATURE_RESOLUTIONS = (16, 32, 64)

#: W+ rows driving each part of the world (documented ground truth).
LAYER_GROUPS: dict[str, tuple[int, ...]] = {
    "id": (0, 1, 2, 3),
    "tex": (0, 1, 2, 3),
    "exp": (3, 4, 5),
    "angle": (4, 5, 6),
    "trans": (4, 5, 6),
    "gamma": (6, 7),
    "background": (8,),
    "detail": (9,),
}

#: Coefficient groups: name -> width, in the flat vector's order.
COEFF_LAYOUT: tuple[tuple[str, int], ...] = (
    ("id", 8), ("exp", 6), ("tex", 6), ("angle", 3), ("gamma", 4), ("trans", 3))

#: Aliases used by stages/tests for sets of coefficient groups.
GROUP_ALIASES: dict[str, tuple[str, ...]] = {
    "pose": ("angle", "trans"),
    "identity": ("id", "tex"),
    "expression": ("exp",),
    "lighting": ("gamma",),
    "illumination": ("gamma",),
}

#: Per-group readout centre and half-range (coeff = centre + scale * tanh(.)); per coefficient.
COEFF_CENTER: dict[str, tuple[float, ...]] = {
    "id": (0.0,) * 8, "exp": (0.0,) * 6, "tex": (0.0,) * 6,
    "angle": (0.0, 0.0, 0.0), "gamma": (0.5, 0.0, 0.3, 0.0), "trans": (0.0, 0.0, 0.0)}
COEFF_SCALE: dict[str, tuple[float, ...]] = {
    "id": (1.0,) * 8, "exp": (1.0,) * 6, "tex": (1.0,) * 6,
    "angle": (0.5, 0.35, 0.25),          # yaw ~ +-29 deg, pitch ~ +-20 deg, roll ~ +-14 deg
    "gamma": (0.2, 0.7, 0.5, 1.0),
    "trans": (0.25, 0.2, 0.0)}            # in the image plane: depth stays fixed (see below)

CAM_DIST = 4.5
FOCAL = 3.0


def coeff_slices() -> dict[str, tuple[int, int]]:
    """group -> (start, end) in the flat coefficient vector."""
    out, i = {}, 0
    for name, n in COEFF_LAYOUT:
        out[name] = (i, i + n)
        i += n
    return out


NUM_COEFFS = sum(n for _, n in COEFF_LAYOUT)


def expand_groups(names) -> tuple[str, ...]:
    """``"pose"`` -> ``("angle", "trans")``; a coefficient group name stays itself."""
    if isinstance(names, str):
        names = (names,)
    out: list[str] = []
    for n in names:
        parts = GROUP_ALIASES.get(n, (n,))
        for p in parts:
            if p not in dict(COEFF_LAYOUT):
                raise ValueError(f"unknown toy coefficient group {n!r}; known: "
                                 f"{[k for k, _ in COEFF_LAYOUT] + list(GROUP_ALIASES)}")
            if p not in out:
                out.append(p)
    return tuple(out)


def seeded(seed: int, tag: str) -> torch.Generator:
    """A CPU generator whose state depends only on ``seed`` and a text ``tag``."""
    h = 0
    for ch in tag.encode():
        h = (h * 131 + ch) % (2 ** 31)
    return torch.Generator().manual_seed(seed * 1_000_003 + h)


def orthonormal_rows(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """A seeded ``[rows, cols]`` matrix with orthonormal rows (rows <= cols)."""
    q, _ = torch.linalg.qr(torch.randn(cols, rows, generator=gen))
    return q.T.contiguous()
