"""BFMFaceModel: parity with Deep3DFaceRecon on the synthetic mini BFM, .mat loading and its errors."""
from __future__ import annotations

import shutil

import pytest
import scipy.io
import torch

from ipsb.backbone.bfm_io import CACHE_SUFFIX, load_bfm, read_bfm_mat
from ipsb.backbone.face_model import BFMFaceModel, euler_rotation
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError

GEOM_ATOL = 1e-5  # README: geometry, colours and normals
PIXEL_ATOL = 1e-3  # README: pixel coordinates


@pytest.fixture(scope="module")
def bfm_dir(tmp_path_factory, request):
    d = tmp_path_factory.mktemp("bfm")
    src = request.config.rootpath / "tests" / "fixtures" / "deep3d" / "mini_bfm.mat"
    shutil.copy(src, d / "BFM_model_front.mat")
    return d


@pytest.fixture(scope="module")
def model(bfm_dir):
    return BFMFaceModel(bfm_dir / "BFM_model_front.mat")


@pytest.fixture(scope="module")
def ref(request):
    return torch.load(request.config.rootpath / "tests/fixtures/deep3d/parity_face_model.pt")


def test_parity_face_model_constants(model, ref):
    c = ref["constants"]
    assert model.focal == c["focal"] and model.center == c["center"]
    assert model.camera_distance == c["camera_distance"] and model.image_size == c["rasterize_size"]
    torch.testing.assert_close(model.init_lit, torch.tensor(c["init_lit"], dtype=torch.float32))
    torch.testing.assert_close(model.persc_proj, ref["persc_proj"])
    torch.testing.assert_close(model.mean_shape, ref["mean_shape_recentered"].reshape(-1), rtol=0, atol=GEOM_ATOL)
    assert model.num_vertices == 300 and model.faces.shape == (532, 3) and model.keypoints.shape == (68,)
    split = model.split(ref["coeffs"])
    assert split.keys() == ref["split"].keys() and all(split[k].equal(v) for k, v in ref["split"].items())


def test_parity_face_model_steps(model, ref):
    s = model.split(ref["coeffs"])
    shape = model.shape(s["id"], s["exp"])
    rot = euler_rotation(s["angle"])
    close = dict(rtol=0, atol=GEOM_ATOL)
    torch.testing.assert_close(shape, ref["face_shape"], **close)
    torch.testing.assert_close(rot, ref["rotation"], **close)
    transformed = shape @ rot + s["trans"][:, None]
    torch.testing.assert_close(transformed, ref["face_shape_transformed"], **close)
    cam = model.to_camera(transformed)
    torch.testing.assert_close(cam, ref["face_vertex"], **close)
    torch.testing.assert_close(model.project(cam), ref["face_proj"], rtol=0, atol=PIXEL_ATOL)
    normals = model.normals(shape)
    torch.testing.assert_close(normals, ref["face_norm"], **close)
    torch.testing.assert_close(normals @ rot, ref["face_norm_roted"], **close)
    albedo = model.texture(s["tex"])
    torch.testing.assert_close(albedo, ref["face_texture"], **close)
    torch.testing.assert_close(model.shade(albedo, normals @ rot, s["gamma"]), ref["face_color"], **close)


def test_parity_face_model_forward(model, ref):
    geo = model(ref["coeffs"])
    close = dict(rtol=0, atol=GEOM_ATOL)
    torch.testing.assert_close(geo.vertices, ref["face_vertex"], **close)
    torch.testing.assert_close(geo.colors, ref["face_color"], **close)
    torch.testing.assert_close(geo.albedo, ref["face_texture"], **close)
    # landmarks are image pixel-index coords (y down): Deep3D's y-up landmark flipped with S-1-y
    lm_ref = ref["landmark"]
    expected = torch.stack([lm_ref[..., 0], 223 - lm_ref[..., 1]], -1)
    torch.testing.assert_close(geo.landmarks, expected, rtol=0, atol=PIXEL_ATOL)
    torch.testing.assert_close(model.to_image_coords(geo.landmarks), lm_ref, rtol=0, atol=PIXEL_ATOL)


def test_face_model_torch_func_and_batch(model, ref):
    coeffs = ref["coeffs"]
    per_sample = torch.func.vmap(lambda c: model(c[None]).landmarks[0])(coeffs)
    torch.testing.assert_close(per_sample, model(coeffs).landmarks, rtol=0, atol=1e-4)
    jac = torch.func.jacrev(lambda c: model(c[None]).vertices[0, :5])(coeffs[0])
    assert jac.shape == (5, 3, 257)
    # vertices depend on id/exp/angle/trans, never on tex or gamma
    assert jac[..., 144:224].abs().max() == 0 and jac[..., 227:254].abs().max() == 0
    assert jac[..., 0:80].abs().max() > 0 and jac[..., 254:257].abs().max() > 0
    # forward is out of place: the input is untouched
    before = coeffs.clone()
    model(coeffs)
    assert coeffs.equal(before)


def test_face_model_state_dict_excludes_bfm(model):
    assert len(model.state_dict()) == 0


def test_face_model_folder_and_cache(bfm_dir, model):
    cache = bfm_dir / ("BFM_model_front.mat" + CACHE_SUFFIX)
    assert cache.is_file()  # written by the module fixture
    from_folder = BFMFaceModel(bfm_dir)
    assert from_folder.id_base.equal(model.id_base)
    cached = load_bfm(bfm_dir / "BFM_model_front.mat")
    fresh = read_bfm_mat(bfm_dir / "BFM_model_front.mat")
    assert cached.keys() == fresh.keys() and all(cached[k].equal(fresh[k]) for k in fresh)
    assert fresh["faces"].min() == 0 and fresh["point_buf"].max() == fresh["faces"].shape[0]


def test_face_model_missing_keys_error(tmp_path, request):
    raw = scipy.io.loadmat(str(request.config.rootpath / "tests/fixtures/deep3d/mini_bfm.mat"))
    raw = {k: v for k, v in raw.items() if not k.startswith("__") and k not in ("exBase", "point_buf")}
    path = tmp_path / "BFM_model_front.mat"
    scipy.io.savemat(str(path), raw)
    with pytest.raises(CorruptCheckpointError) as e:
        BFMFaceModel(path)
    msg = str(e.value)
    assert "exBase" in msg and "point_buf" in msg and "checkpoints/README.md" in msg and str(path) in msg


def test_face_model_bad_shapes_and_missing_file(tmp_path, request):
    raw = scipy.io.loadmat(str(request.config.rootpath / "tests/fixtures/deep3d/mini_bfm.mat"))
    raw = {k: v for k, v in raw.items() if not k.startswith("__")}
    raw["idBase"] = raw["idBase"][:-3]
    path = tmp_path / "bad.mat"
    scipy.io.savemat(str(path), raw)
    with pytest.raises(CorruptCheckpointError, match="idBase"):
        BFMFaceModel(path, cache=False)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file")
    with pytest.raises(CorruptCheckpointError, match="junk.mat"):
        BFMFaceModel(tmp_path / "junk.mat", cache=False)
    with pytest.raises(MissingCheckpointError, match="BFM"):
        BFMFaceModel(tmp_path / "nowhere" / "BFM_model_front.mat")


def test_face_model_wrong_coeff_width(model):
    with pytest.raises(ValueError, match="257"):
        model(torch.zeros(1, 256))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_face_model_cuda_matches_cpu(model, ref):
    cpu = model(ref["coeffs"])
    gpu = model.to("cuda")(ref["coeffs"].cuda())
    model.to("cpu")
    torch.testing.assert_close(gpu.vertices.cpu(), cpu.vertices, rtol=0, atol=1e-5)
    torch.testing.assert_close(gpu.landmarks.cpu(), cpu.landmarks, rtol=0, atol=1e-3)


def test_face_model_from_tensors(bfm_dir, model, ref):
    built = BFMFaceModel.from_tensors(load_bfm(bfm_dir / "BFM_model_front.mat"))
    assert built.path is None and built.num_coeffs == 257 and built.image_size == 224
    torch.testing.assert_close(built(ref["coeffs"]).vertices, model(ref["coeffs"]).vertices, rtol=0, atol=0)
    not_recentred = BFMFaceModel.from_tensors(load_bfm(bfm_dir / "BFM_model_front.mat"), recenter=False)
    shift = (not_recentred.mean_shape - model.mean_shape).reshape(-1, 3)
    torch.testing.assert_close(shift, shift[:1].expand_as(shift))  # recentring is a pure translation
    assert shift.abs().max() > 0.01
