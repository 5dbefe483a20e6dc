"""The toy world's generator, face model and soft renderer: shapes, ground truth, torch.func."""
from __future__ import annotations

import pytest
import torch
from torch.func import jacrev, jvp, vmap

from ipsb.backbone.interfaces import Generator, FaceModel, Renderer
from ipsb.backbone.toy import SoftRenderer, ToyFaceModel, ToyGenerator, world


@pytest.fixture(scope="module")
def gen():
    return ToyGenerator(seed=0).eval().requires_grad_(False)


def test_toy_interfaces_and_shapes(gen):
    assert isinstance(gen, Generator) and isinstance(gen.face_model, FaceModel) and isinstance(gen.renderer, Renderer)
    w = gen.sample_wplus(4, seed=1)
    img, feats = gen.synthesis(w, return_features=True)
    assert img.shape == (4, 3, 64, 64) and img.min() >= -1 and img.max() <= 1
    assert sorted(feats) == [16, 32, 64] and all(f.shape == (4, 10, r, r) for r, f in feats.items())
    assert torch.allclose(gen.compose(feats[64]), img, atol=1e-5)   # image = fixed function of last map
    assert gen.coefficients(w).shape == (4, world.NUM_COEFFS)
    with pytest.raises(ValueError, match=r"\[B,10,32\]"):
        gen.synthesis(torch.zeros(2, 18, 512))


def test_toy_generator_is_seeded(gen):
    other = ToyGenerator(seed=0)
    w = gen.sample_wplus(2, seed=3)
    assert torch.equal(gen.synthesis(w), other.synthesis(w))
    assert not torch.allclose(ToyGenerator(seed=1).coefficients(w), gen.coefficients(w))


def test_toy_mapping_truncation(gen):
    z = torch.randn(5, gen.z_dim)
    assert torch.allclose(gen.mapping(z, truncation_psi=0.0), gen.w_avg.expand(5, -1), atol=1e-6)
    w = gen.mapping(z)
    assert w.std(0).mean() > 0.1                            # a non-trivial W distribution
    assert torch.allclose(gen.mean_latent(), gen.w_avg)
    assert torch.allclose(gen.mean_latent(2048), gen.w_avg, atol=0.1)


def test_toy_coefficients_follow_documented_layers(gen):
    w = gen.sample_wplus(3, seed=5, mix=True)
    c0 = gen.coefficients(w)
    sl = world.coeff_slices()
    for row in range(gen.num_ws):
        w2 = w.clone()
        w2[:, row] += 0.5 * torch.randn(3, gen.w_dim)
        changed = (gen.coefficients(w2) - c0).abs().amax(0) > 1e-6
        for name, (a, b) in sl.items():
            assert bool(changed[a:b].any()) == (row in world.LAYER_GROUPS[name]), (row, name)


def test_toy_true_subspace_spans_the_readout_jacobian(gen):
    w = gen.sample_wplus(1, seed=7, mix=True)[0]
    jac = jacrev(lambda x: gen.coefficients(x[None])[0])(w).flatten(1)          # [30, 320]
    sl = world.coeff_slices()
    for alias in ("pose", "exp", "lighting", "identity"):
        q = gen.true_subspace(alias)
        assert torch.allclose(q.T @ q, torch.eye(q.shape[1]), atol=1e-5)
        rows = torch.cat([jac[slice(*sl[n])] for n in world.expand_groups(alias)])
        resid = rows - (rows @ q) @ q.T
        assert resid.norm() < 1e-4 * rows.norm()
    assert gen.true_subspace("pose").shape == (320, 5)          # yaw, pitch, roll, trans x, y (depth fixed)
    assert jac[sl["trans"][0] + 2].abs().max() == 0
    # pose and expression share rows 4-5 but are different directions
    overlap = torch.linalg.svdvals(gen.true_subspace("pose").T @ gen.true_subspace("exp"))
    assert overlap.max() < 0.99


def test_toy_modulate_changes_image(gen):
    w = gen.sample_wplus(2, seed=2)
    base = gen.synthesis(w)
    same = gen.synthesis(w, modulate=lambda r, f: f)
    assert torch.allclose(base, same, atol=1e-5)
    for res in gen.feature_resolutions:
        def mod(r, f, res=res):
            return torch.cat([f[:, :3], torch.zeros_like(f[:, 3:4]), f[:, 4:]], 1) if r == res else f
        out = gen.synthesis(w, modulate=mod)
        assert (out - base).abs().mean() > 0.02, res           # mask removed -> background shows


def test_toy_noise_modes(gen):
    w = gen.sample_wplus(1, seed=2)
    a, b = gen.synthesis(w, noise_mode="const"), gen.synthesis(w, noise_mode="const")
    assert torch.equal(a, b)
    assert not torch.equal(gen.synthesis(w, noise_mode="random"), a)
    assert (gen.synthesis(w, noise_mode="none") - a).abs().max() < 0.1
    with pytest.raises(ValueError, match="noise_mode"):
        gen.synthesis(w, noise_mode="bogus")


def test_toy_face_model_expression_is_local():
    fm = ToyFaceModel()
    c = torch.zeros(1, world.NUM_COEFFS)
    sl = world.coeff_slices()
    base = fm.shape(c[:, slice(*sl["id"])], c[:, slice(*sl["exp"])])
    exp = torch.zeros(1, 6)
    exp[0, 0] = 1.0                                        # mouth open: lower face moves down
    moved = (fm.shape(c[:, slice(*sl["id"])], exp) - base)[0]
    t = fm.face_coords[:, 1]
    assert moved[t < -0.5, 1].mean() < -0.1 and moved[t > 0.3].abs().max() < 2e-3
    exp = torch.zeros(1, 6)
    exp[0, 3] = 1.0                                        # brows raised: upper face only
    moved = (fm.shape(c[:, slice(*sl["id"])], exp) - base)[0]
    assert moved[t > 0.3, 1].max() > 0.1 and moved[t < -0.3].abs().max() < 1e-2


def test_toy_face_model_pose_and_landmarks():
    fm, r = ToyFaceModel(), SoftRenderer()
    c = torch.zeros(2, world.NUM_COEFFS)
    c[:, world.coeff_slices()["gamma"][0]] = 0.5
    c[1, world.coeff_slices()["angle"][0]] = 0.4          # yaw
    g = fm(c)
    assert g.vertices.shape == (2, fm.num_vertices, 3) and (g.vertices[..., 2] < 0).all()
    assert torch.allclose(fm.project(g.vertices), r.project(g.vertices))
    nose = fm.landmark_names.index("nose")
    assert abs(g.landmarks[0, nose, 0] - 32) < 1.0                 # frontal: nose on the centre line
    assert g.landmarks[1, nose, 0] - g.landmarks[0, nose, 0] > 3   # yaw turns the nose sideways
    assert g.colors.min() >= 0 and g.colors.max() <= 1


def test_toy_soft_renderer_tiles_match_dense(gen):
    w = gen.sample_wplus(4, seed=11, mix=True)
    geo = gen.face_model(gen.coefficients(w))
    faces = gen.face_model.faces
    tiled = SoftRenderer()(geo.vertices, faces, geo.colors)
    dense = SoftRenderer(faces_per_tile=10_000)(geo.vertices, faces, geo.colors)
    inside = (dense.mask > 0.5).float()
    assert ((tiled.image - dense.image).abs() * inside).sum() / inside.sum() / 3 < 2e-3
    assert (tiled.mask - dense.mask).abs().mean() < 5e-3
    assert 0.15 < dense.mask.mean() < 0.7
    depth = dense.depth[dense.mask > 0.9]
    assert depth.min() > world.CAM_DIST - 1.5 and depth.max() < world.CAM_DIST + 1.5


def test_toy_soft_renderer_culls_back_faces_and_checks_input():
    fm, r = ToyFaceModel(), SoftRenderer()
    g = fm(torch.zeros(1, world.NUM_COEFFS))
    front = r(g.vertices, fm.faces, g.colors)
    back = r(g.vertices, fm.faces.flip(1), g.colors)      # reversed winding = seen from behind
    assert front.mask.mean() > 0.15 and back.mask.max() < 0.05
    with pytest.raises(ValueError, match="vertices and colors"):
        r(g.vertices, fm.faces, g.colors[:, :10])
    with pytest.raises(ValueError, match="multiple of tile"):
        SoftRenderer(image_size=30)


def test_toy_generator_torch_func(gen):
    """vmap(jacrev) and jvp through synthesis agree with finite differences."""
    w = gen.sample_wplus(2, seed=13)
    f = lambda x: gen.synthesis(x[None], noise_mode="none")[0].mean(dim=(1, 2))   # [3]
    jac = vmap(jacrev(f))(w)                                                         # [2,3,10,32]
    assert jac.shape == (2, 3, 10, 32) and jac.abs().sum() > 0
    d = 1e-2 * torch.randn(10, 32)
    fd = (f(w[0] + d) - f(w[0] - d)) / 2
    lin = (jac[0].flatten(1) @ d.flatten())
    assert (lin - fd).abs().max() < 0.1 * fd.abs().max() + 1e-4
    _, tangent = jvp(f, (w[0],), (d,))
    assert torch.allclose(tangent, lin, atol=1e-5)
