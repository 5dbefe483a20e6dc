"""MeshRenderer (pytorch3d): coverage of known meshes, depth, colours, gradients, BFM convention."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

pytest.importorskip("pytorch3d")

from ipsb.backbone.renderer import MeshRenderer  # noqa: E402


def disk(radius: float, depth: float, n: int = 96, center=(0.0, 0.0)):
    """Flat fan-triangulated disk facing the camera: vertices [1,n+1,3], faces [n,3]."""
    th = torch.arange(n) * 2 * math.pi / n
    ring = torch.stack([center[0] + radius * th.cos(), center[1] + radius * th.sin(), torch.full_like(th, depth)], -1)
    verts = torch.cat([torch.tensor([[center[0], center[1], depth]]), ring])[None]
    idx = torch.arange(n)
    faces = torch.stack([torch.zeros(n, dtype=torch.long), 1 + idx, 1 + (idx + 1) % n], -1)
    return verts, faces


def test_renderer_disk_mask_area_and_depth():
    r = MeshRenderer(image_size=96, focal=200.0, center=47.3)
    radius, depth, n = 1.5, 10.0, 96
    verts, faces = disk(radius, depth, n, center=(0.13, -0.21))
    out = r(verts, faces, torch.rand(1, n + 1, 3))
    px = radius * 200.0 / depth
    polygon_area = 0.5 * n * math.sin(2 * math.pi / n) * px ** 2
    area = out.mask.sum().item()
    assert abs(area - polygon_area) / polygon_area < 0.02
    assert abs(area - math.pi * px ** 2) / (math.pi * px ** 2) < 0.02
    inside = out.mask[0, 0] > 0
    torch.testing.assert_close(out.depth[0, 0][inside], torch.full((int(inside.sum()),), depth), rtol=0, atol=1e-4)
    assert out.depth[0, 0][~inside].abs().max() == 0 and out.image[0][:, ~inside].abs().max() == 0
    assert out.image.shape == (1, 3, 96, 96) and out.mask.shape == out.depth.shape == (1, 1, 96, 96)


def test_renderer_orientation_matches_projection():
    """A vertex at camera-space (x, y, z) is drawn at column f x/z + c and row S-1-(f y/z + c)."""
    r = MeshRenderer(image_size=64, focal=100.0, center=31.5)
    verts, faces = disk(0.3, 10.0, 32, center=(1.0, 1.5))  # to the right and up
    out = r(verts, faces, torch.ones(1, 33, 3))
    rows, cols = torch.nonzero(out.mask[0, 0], as_tuple=True)
    u, v = 100.0 * 1.0 / 10.0 + 31.5, 100.0 * 1.5 / 10.0 + 31.5
    assert abs(cols.float().mean().item() - u) < 0.3
    assert abs(rows.float().mean().item() - (63 - v)) < 0.3


def test_renderer_constant_colour_and_batch():
    r = MeshRenderer(image_size=48, focal=150.0, center=23.5)
    v1, faces = disk(1.0, 10.0, 48)
    v2, _ = disk(0.5, 10.0, 48)
    colours = torch.tensor([0.2, 0.5, 0.9]).expand(2, 49, 3)
    out = r(torch.cat([v1, v2]), faces, colours)
    assert out.mask[0].sum() > 3 * out.mask[1].sum()
    for b in range(2):
        inside = out.mask[b, 0] > 0
        torch.testing.assert_close(out.image[b][:, inside], torch.tensor([0.2, 0.5, 0.9])[:, None].expand(3, int(inside.sum())))


def test_renderer_gradients_reach_vertices_and_colours():
    torch.manual_seed(0)
    r = MeshRenderer(image_size=32, focal=100.0, center=15.5)
    verts, faces = disk(1.0, 10.0, 24)
    verts = (verts + 0.05 * torch.randn_like(verts)).requires_grad_(True)
    colours = torch.rand(1, 25, 3, requires_grad=True)
    weights = torch.rand(1, 3, 32, 32)
    loss = (r(verts, faces, colours).image * weights).sum()
    gv, gc = torch.autograd.grad(loss, [verts, colours])
    assert torch.isfinite(gv).all() and gv[..., :2].abs().sum() > 0
    assert torch.isfinite(gc).all() and (gc.abs().sum(-1) > 0).sum() >= 20
    # the image is linear in the colours: the gradient is exact against a finite difference
    delta = torch.zeros_like(colours)
    delta[0, 0, 1] = 1.0
    with torch.no_grad():
        diff = ((r(verts, faces, colours + delta).image - r(verts, faces, colours).image) * weights).sum()
    assert abs(diff.item() - gc[0, 0, 1].item()) < 1e-3 * max(1.0, abs(diff.item()))


def test_renderer_depth_range_culls():
    r = MeshRenderer(image_size=32, focal=100.0, center=15.5, znear=5.0, zfar=15.0)
    verts, faces = disk(1.0, 20.0, 16)
    assert r(verts, faces, torch.ones(1, 17, 3)).mask.sum() == 0


def test_renderer_bad_input():
    r = MeshRenderer(image_size=16)
    with pytest.raises(ValueError, match="vertices"):
        r(torch.zeros(4, 3), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="faces"):
        r(torch.zeros(1, 4, 3), torch.zeros(1, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="colors"):
        r(torch.zeros(1, 4, 3), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError):
        MeshRenderer(znear=10.0, zfar=5.0)


def test_renderer_bfm_landmarks_land_on_render(tmp_path, request):
    """BFMFaceModel output feeds the renderer directly and its landmarks sit on the rendered face."""
    from ipsb.backbone.face_model import BFMFaceModel

    shutil.copy(request.config.rootpath / "tests/fixtures/deep3d/mini_bfm.mat", tmp_path / "BFM_model_front.mat")
    model = BFMFaceModel(tmp_path, cache=False)
    torch.manual_seed(1)
    coeffs = torch.zeros(2, 257)
    coeffs[1, 224:227] = torch.tensor([0.1, -0.2, 0.05])
    coeffs[1, 254:257] = torch.tensor([0.05, -0.03, 0.0])
    geo = model(coeffs)
    r = MeshRenderer(image_size=224, focal=model.focal, center=model.center)
    out = r(geo.vertices, model.faces, geo.colors)
    assert out.mask.sum(dim=(1, 2, 3)).min() > 1000
    # central landmarks (nose, eyes, mouth: 27-67) are interior vertices of the mesh
    lm = geo.landmarks[:, 27:].round().long()
    for b in range(2):
        hits = out.mask[b, 0, lm[b, :, 1].clamp(0, 223), lm[b, :, 0].clamp(0, 223)]
        assert hits.float().mean() > 0.9
        inside = out.mask[b, 0] > 0
        assert (out.depth[b, 0][inside] - 10).abs().max() < 1.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_renderer_cuda_matches_cpu():
    r = MeshRenderer(image_size=48, focal=150.0, center=23.5)
    verts, faces = disk(1.0, 10.0, 48, center=(0.1, 0.2))
    colours = torch.rand(1, 49, 3)
    cpu = r(verts, faces, colours)
    gpu = r(verts.cuda(), faces.cuda(), colours.cuda())
    assert gpu.image.device.type == "cuda"
    assert (gpu.mask.cpu() != cpu.mask).sum() <= 2
    inside = (gpu.mask.cpu() * cpu.mask).bool().expand_as(cpu.image)
    torch.testing.assert_close(gpu.image.cpu()[inside], cpu.image[inside], rtol=0, atol=1e-4)


def _jittered_grid(n: int = 24, batch: int = 2, seed: int = 0):
    """Curved, jittered grid meshes (no edge passes exactly through a pixel centre)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    base = torch.stack([xs, ys, 10 + 0.3 * (xs ** 2 + ys ** 2)], -1).reshape(1, -1, 3)
    verts = base + 0.02 * torch.randn(batch, n * n, 3, generator=g)
    verts = verts * torch.tensor([1.0, 1.0, 1.0]) + torch.linspace(0, 0.2, batch)[:, None, None]
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    faces = torch.cat([torch.stack([a, a + 1, a + n + 1], -1), torch.stack([a, a + n + 1, a + n], -1)])
    return verts, faces, torch.rand(batch, n * n, 3, generator=g)


def test_renderer_tiled_equals_whole_image():
    verts, faces, colours = _jittered_grid()
    whole = MeshRenderer(image_size=80, focal=250.0, center=39.3, tile_size=0)
    tiled = MeshRenderer(image_size=80, focal=250.0, center=39.3, tile_size=16)
    a, b = whole(verts, faces, colours), tiled(verts, faces, colours)
    assert (a.mask != b.mask).sum() <= 2 and a.mask.sum() > 4000
    both = (a.mask * b.mask).bool()
    torch.testing.assert_close(b.depth[both], a.depth[both], rtol=0, atol=1e-4)
    torch.testing.assert_close(b.image[both.expand_as(a.image)], a.image[both.expand_as(a.image)], rtol=0, atol=1e-4)
    v = verts.clone().requires_grad_(True)
    g_tiled, = torch.autograd.grad(tiled(v, faces, colours).image.sum(), v)
    g_whole, = torch.autograd.grad(whole(v, faces, colours).image.sum(), v)
    assert g_tiled.abs().sum() > 0
    torch.testing.assert_close(g_tiled, g_whole, rtol=1e-3, atol=1e-3 * g_whole.abs().max().item())
