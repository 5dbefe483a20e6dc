"""Direction sets and the editing baselines' defining properties (toy world, 32 px; seconds)."""
import pytest
import torch

from ipsb.backbone.stylegan2 import StyleGAN2Generator
from ipsb.editing.attributes import get_attribute
from ipsb.editing.baselines import ganspace, interfacegan, linear_svm, project_out, sefa
from ipsb.editing.directions import DirectionSet
from ipsb.editing.style_maps import style_weights, toy_readout_maps


def test_direction_set_normalises_and_keeps_to_its_layers():
    v = torch.zeros(2, 4, 3)
    v[0, 1] = torch.tensor([3.0, 0, 4])
    v[1, 2] = torch.tensor([0, 2.0, 0])
    ds = DirectionSet("m", ["a", "b"], v.flatten(1), torch.tensor([False, True, True, False]), 4, 3)
    assert torch.allclose(ds.vectors.norm(dim=1), torch.ones(2))
    w = torch.zeros(5, 4, 3)
    out = ds.apply(w, "a", torch.arange(5.0))
    assert torch.allclose(out[:, 1, 0], torch.arange(5.0) * 0.6) and out[:, [0, 2, 3]].abs().max() == 0
    v[0, 0, 0] = 1.0                                      # a row outside the mask
    with pytest.raises(ValueError, match="outside their layer mask"):
        DirectionSet("m", ["a", "b"], v.flatten(1), torch.tensor([False, True, True, False]), 4, 3)
    with pytest.raises(ValueError, match="has no direction 'c'"):
        ds.vector("c")


def test_from_basis_names_each_column(toy_basis_file):
    basis, _ = toy_basis_file
    ds = DirectionSet.from_basis(basis)
    assert ds.names[:2] == ["pose:0", "pose:1"] and len(ds) == basis.num_directions
    a, _ = basis.groups["exp"]
    assert torch.allclose(ds.vector("exp:0").flatten(), basis.V[:, a], atol=1e-6)


def test_sefa_directions_are_eigenvectors_of_the_stacked_style_weights(toy32):
    gen = toy32.generator
    ds = sefa(gen, "3..7", k=8)
    a = ds.extras["A"].double()
    ata = a.T @ a
    u = ds.extras["w_directions"].double()                # [k, w_dim]
    lam = ds.extras["eigenvalues"].double()
    assert torch.allclose(u @ ata, lam[:, None] * u, atol=1e-4)
    assert torch.allclose(u @ u.T, torch.eye(8, dtype=torch.float64), atol=1e-5)
    assert bool((lam[:-1] >= lam[1:]).all())
    # A is the normalised stack of the per-row maps of rows 3..7, each row of A of unit length
    weights = style_weights(gen)
    stacked = torch.cat([weights[r] for r in range(3, 8)]).double()
    assert torch.allclose(a, stacked / stacked.norm(dim=1, keepdim=True), atol=1e-5)
    # the W direction sits on rows 3..7 only, with unit W+ norm
    rows = ds.vectors.reshape(8, gen.num_ws, gen.w_dim)
    assert rows[:, [0, 1, 2, 8, 9]].abs().max() == 0
    assert torch.allclose(rows[:, 3] * 5 ** 0.5, u.float(), atol=1e-5)


def test_toy_style_maps_are_the_generators_linear_readouts(toy32):
    """coefficients = centre + scale * tanh((w - w_avg) @ M^T) for every toy group: the map SeFa uses."""
    gen = toy32.generator
    w = gen.sample_wplus(6, seed=3, truncation_psi=0.9, mix=True)
    x = (w - gen.w_avg).flatten(1)
    coeffs = gen.coefficients(w)
    for name, m in toy_readout_maps(gen).items():
        a, b = gen.face_model.coeff_groups[name]
        keep = gen.coeff_scale[a:b] != 0
        want = gen.coeff_center[a:b][keep] + gen.coeff_scale[a:b][keep] * torch.tanh(x @ m.T)
        assert torch.allclose(coeffs[:, a:b][:, keep], want, atol=1e-5), name
    weights = style_weights(gen)
    assert sorted(weights) == list(range(10)) and weights[0].shape == (14, gen.w_dim)   # id 8 + tex 6


def test_stylegan2_style_weights_follow_the_rows_each_layer_reads():
    """Each ModulatedConv2d's modulation input is the W+ row style_weights files it under."""
    torch.manual_seed(0)
    gen = StyleGAN2Generator(resolution=16, w_dim=8, n_mlp=1, channel_multiplier=1, channel_max=16).eval()
    seen = {}
    mods = {}
    for name, mod in gen.named_modules():
        if name.endswith("conv.modulation"):
            mods[name] = mod
            mod.register_forward_hook(lambda m, inp, out, name=name: seen.__setitem__(name, inp[0][0, 0].item()))
    wplus = torch.arange(gen.num_ws, dtype=torch.float32)[None, :, None].expand(1, gen.num_ws, 8).contiguous()
    gen.synthesis(wplus)
    by_row = {}
    for name, row in seen.items():
        by_row.setdefault(int(row), []).append(mods[name].weight * mods[name].scale)
    weights = style_weights(gen)
    assert sorted(weights) == sorted(by_row) == list(range(gen.num_ws))
    for r, ws in by_row.items():
        got = weights[r]
        want = torch.cat(ws)
        assert got.shape == want.shape
        # same rows, possibly in another order
        assert torch.allclose(got.sum(0), want.sum(0), atol=1e-5) and torch.allclose(got.norm(), want.norm())


def test_ganspace_components_are_orthonormal_and_ordered_by_variance(toy32):
    ds = ganspace(toy32, "3..7", n_samples=4000, seed=1, k=10)
    u = ds.extras["w_directions"].double()
    assert torch.allclose(u @ u.T, torch.eye(10, dtype=torch.float64), atol=1e-5)
    var = ds.extras["variances"]
    assert bool((var[:-1] >= var[1:]).all())
    w = toy32.sample_wplus(4000, seed=1)[:, 0].double()
    proj_var = ((w - w.mean(0)) @ u.T).var(0)
    assert torch.allclose(proj_var.float(), var, rtol=1e-3)
    # the first component explains more variance than any other unit direction we try
    rand = torch.nn.functional.normalize(torch.randn(50, w.shape[1], dtype=torch.float64), dim=1)
    assert float(((w - w.mean(0)) @ rand.T).var(0).max()) <= float(var[0]) * (1 + 1e-6)


def test_linear_svm_recovers_a_known_boundary():
    g = torch.Generator().manual_seed(0)
    normal = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    x = torch.randn(600, 16, generator=g) * 2 + 3.0
    score = (x - 3.0) @ normal
    keep = score.abs() > 0.3                               # a margin around the true boundary
    beta, b, acc = linear_svm(x[keep], torch.sign(score[keep]))
    assert acc == 1.0
    assert float(torch.nn.functional.cosine_similarity(beta, normal, dim=0)) > 0.97


def test_project_out_is_orthogonal_to_the_conditions():
    g = torch.Generator().manual_seed(1)
    n, others = torch.randn(12, generator=g), torch.randn(3, 12, generator=g)
    p = project_out(n, others)
    assert abs(float(p.norm()) - 1) < 1e-6 and float((others @ p).abs().max()) < 1e-5
    assert float(p @ n) > 0


def test_interfacegan_conditional_normals_are_orthogonal_to_the_others(toy32):
    attrs = [get_attribute(n, toy32.face_model) for n in ("yaw", "smile", "light_x")]
    plain = interfacegan(toy32, attrs, n_samples=240, seed=1)
    cond = interfacegan(toy32, attrs, n_samples=240, seed=1, conditional=True)
    normals = plain.extras["normals"]
    u = cond.extras["w_directions"]
    for i in range(3):
        others = torch.cat([normals[:i], normals[i + 1:]])
        assert float((others @ u[i]).abs().max()) < 1e-5
        assert float(u[i] @ normals[i]) > 0.5               # still mostly the attribute's own normal
    # the yaw boundary separates its labelled extremes, and moving along it raises the true yaw
    assert float(plain.extras["accuracy"][0]) > 0.95
    gen = toy32.generator
    w = toy32.sample_wplus(8, seed=9, truncation_psi=0.7)
    yaw = attrs[0]
    before = yaw.read(gen.coefficients(w), gen.face_model.coeff_groups)
    after = yaw.read(gen.coefficients(plain.apply(w, "yaw", 1.0)), gen.face_model.coeff_groups)
    assert bool((after > before).all())
    assert plain.layer_mask.all() and not cond.extras["w_directions"].isnan().any()
