"""Identity networks (ipsb.backbone.identity*): strict manifest loading at full size, parity with the reference outputs
(IR-SE50 incl. the pSp/e4e 256->crop->112 ID-loss path, iResNet-50/100, CosFace sphere20),
the crop, torch.func compatibility and loader errors."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from conftest import FIXTURES
from helpers.det_weights import manifest
from helpers.manifest_state import read_manifest, state_from_manifest
from ipsb.backbone.identity import (IDENTITY_NETWORKS, IResNet, IRSE, FaceCrop, SphereFace, load_identity_encoder,
                                    load_ir_se50, load_iresnet, load_sphere20)
from ipsb.backbone.interfaces import IdentityEncoder, freeze
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError


def _to_float(u8_nhwc: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1,1] exactly as the references' ``/255 -0.5 /0.5``."""
    return u8_nhwc.permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)


@pytest.fixture(scope="module")
def arcface_dir():
    return FIXTURES / "arcface"


@pytest.fixture(scope="module")
def irse(arcface_dir):
    state = state_from_manifest(read_manifest(arcface_dir / "manifest_ir_se50.json"))
    return load_ir_se50(state), state


@pytest.fixture(scope="module")
def sphere(arcface_dir):
    state = state_from_manifest(read_manifest(arcface_dir / "manifest_cosface_sphere20.json"))
    return load_sphere20(state, crop="none")


class TestParityIrseIresnetSphere20:
    """Identity-network parity: IR-SE50, iResNet-50/100 manifests and outputs, CosFace sphere20.

    One class so that ``-k "parity and (irse or iresnet)"`` selects all identity parity tests.
    """

    # ---------------------------------------------------------------- IR-SE50

    def test_irse_manifest_strict_and_output(self, irse, arcface_dir):
        model, _ = irse
        assert manifest(model.state_dict()) == read_manifest(arcface_dir / "manifest_ir_se50.json")
        assert isinstance(model, IdentityEncoder) and not model.training
        assert all(not p.requires_grad for p in model.parameters())
        ref = torch.load(arcface_dir / "parity_ir_se50.pt")
        assert torch.equal(_to_float(ref["input_uint8_hwc"]), ref["input"])
        with torch.no_grad():
            out = model.embed_aligned(ref["input"])
        assert_close(out, ref["output"], rtol=0, atol=1e-5)
        assert_close(out, ref["output_float64_ref"], rtol=0, atol=1e-5)
        assert_close(out.norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)


    def test_irse_idloss_path_256(self, irse, arcface_dir):
        """pSp/e4e extract_feats: x[:, :, 35:223, 32:220] -> AdaptiveAvgPool2d(112) -> facenet."""
        model, _ = irse
        ref = torch.load(arcface_dir / "parity_ir_se50.pt")
        image = _to_float(ref["idloss_input_256_uint8_hwc"])
        assert_close(model.preprocess(image), ref["idloss_pooled_112"], rtol=0, atol=1e-6)
        with torch.no_grad():
            out = model(image)
        assert_close(out, ref["idloss_output"], rtol=0, atol=1e-5)


    def test_irse_old_checkpoint_without_bn_counters(self, irse, arcface_dir):
        """A PyTorch-0.4-era, DataParallel-saved state: ``module.`` prefixes, no ``num_batches_tracked``."""
        model, state = irse
        old = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        assert len(old) == len(state) - sum(k.endswith("num_batches_tracked") for k in state) and len(old) < len(state)
        loaded = load_ir_se50(old, crop="none")
        ref = torch.load(arcface_dir / "parity_ir_se50.pt")
        with torch.no_grad():
            assert torch.equal(loaded(ref["input"]), model.embed_aligned(ref["input"]))


    # ---------------------------------------------------------------- iResNet

    def test_iresnet50_manifest_strict_and_output(self, arcface_dir):
        state = state_from_manifest(read_manifest(arcface_dir / "manifest_iresnet50.json"))
        model = load_iresnet(state, depth=50, crop="none")
        assert manifest(model.state_dict()) == read_manifest(arcface_dir / "manifest_iresnet50.json")
        ref = torch.load(arcface_dir / "parity_iresnet50.pt")
        with torch.no_grad():
            raw = model.raw_embedding(ref["input"])
            out = model(ref["input"])
        scale = ref["output"].abs().max()
        assert_close(raw, ref["output"], rtol=1e-4, atol=1e-4 * scale)
        assert_close(raw, ref["output_float64_ref"], rtol=1e-4, atol=1e-4 * scale)
        assert_close(out, ref["output_l2norm"], rtol=0, atol=1e-6)


    def test_iresnet100_manifest_strict_load(self, arcface_dir):
        man = read_manifest(arcface_dir / "manifest_iresnet100.json")
        state = state_from_manifest(man)
        model = load_iresnet(state)  # depth inferred from the keys
        assert manifest(model.state_dict()) == man
        assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 13, 30, 3]
        assert sum(p.numel() for p in model.state_dict().values() if p.is_floating_point()) == sum(
            v.numel() for v in state.values() if v.is_floating_point())
        x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.no_grad():
            out = model(x)
        assert out.shape == (1, 512) and torch.isfinite(out).all()
        assert_close(out.norm(dim=1), torch.ones(1), rtol=0, atol=1e-5)
        with pytest.raises(CorruptCheckpointError, match=r"not iResNet-50"):
            load_iresnet(state, depth=50)


    # ---------------------------------------------------------------- sphere20

    def test_sphere20_manifest_strict_and_output(self, sphere, arcface_dir):
        assert manifest(sphere.state_dict()) == read_manifest(arcface_dir / "manifest_cosface_sphere20.json")
        ref = torch.load(arcface_dir / "parity_cosface_sphere20.pt")
        assert torch.equal(_to_float(ref["input_uint8_hwc"]), ref["input"])
        with torch.no_grad():
            assert_close(sphere.raw_embedding(ref["input"]), ref["output"], rtol=1e-4, atol=1e-4)
            assert_close(sphere.raw_embedding(ref["input_hflip"]), ref["output_hflip"], rtol=1e-4, atol=1e-4)
            assert_close(sphere.raw_embedding(ref["input"]), ref["output_float64_ref"], rtol=1e-4, atol=1e-4)
            feat = sphere.mirror_feature(ref["input"])
            assert_close(feat, ref["lfw_feature_1024"], rtol=1e-4, atol=1e-4)
            emb = sphere(ref["input"])
        assert emb.shape == (2, 1024)
        assert_close(emb, torch.nn.functional.normalize(ref["lfw_feature_1024"], dim=1), rtol=0, atol=1e-6)
        # the reference LFW cosine f1.f2/(|f1||f2|+1e-5) equals our dot product to ~1e-5 relative
        f = ref["lfw_feature_1024"]
        cos_ref = (f[0] @ f[1]) / (f[0].norm() * f[1].norm() + 1e-5)
        assert abs(float(emb[0] @ emb[1]) - float(cos_ref)) < 1e-5


def test_sphere20_mirror_swaps_halves(sphere):
    x = torch.rand(1, 3, 112, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        a, b = sphere(x), sphere(x.flip(-1))
    assert_close(b, torch.cat([a[:, 512:], a[:, :512]], 1), rtol=0, atol=1e-6)
    assert float((a[:, :512] - a[:, 512:]).abs().max()) > 1e-3  # the two halves differ


# ---------------------------------------------------------------- crop and input checks

def test_face_crop_pools_large_images_like_256():
    x = torch.rand(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(3)) * 2 - 1
    crop = FaceCrop()
    x256 = torch.nn.functional.avg_pool2d(x, 4)
    assert_close(crop(x), crop(x256), rtol=0, atol=1e-6)
    assert crop(x).shape == (2, 3, 112, 112)
    sphere_crop = SphereFace(crop="ffhq").crop
    assert sphere_crop(x256).shape == (2, 3, 112, 96)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(1, 1, 256, 256), r"\[B,3,H,W\]"),
    (torch.zeros(3, 256, 256), r"\[B,3,H,W\]"),
    (torch.zeros(1, 3, 256, 200), "square"),
    (torch.zeros(1, 3, 256, 256, dtype=torch.uint8), "floating"),
])
def test_crop_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        FaceCrop()(bad)


def test_crop_none_requires_native_size_and_bad_crop_name():
    with pytest.raises(ValueError, match="112x96"):
        FaceCrop(out_size=(112, 96), box=None)(torch.zeros(1, 3, 112, 112), "sphere20")
    with pytest.raises(ValueError, match="crop must be"):
        IRSE((1, 1, 1, 1), crop="center", input_size=32)


# ---------------------------------------------------------------- torch.func

@pytest.mark.parametrize("make", [
    lambda: IRSE((1, 1, 1, 1), crop="none", input_size=32),
    lambda: IResNet((1, 1, 1, 1), num_features=64, crop="none", input_size=32),
    lambda: SphereFace((1, 1, 1, 1), crop="none", input_size=(32, 24)),
], ids=["irse", "iresnet", "sphere"])
def test_identity_forward_is_torch_func_compatible(make):
    """vmap over samples equals the batched forward; jvp agrees with the vjp (<u, Jv> = <J^T u, v>)."""
    torch.manual_seed(0)
    model = freeze(make())
    size = model.input_size
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        batched = model(x)
    per_sample = torch.func.vmap(lambda xi: model(xi[None])[0])(x)
    assert_close(per_sample, batched, rtol=1e-5, atol=1e-6)
    v = torch.randn_like(x[:1])
    u = torch.randn_like(batched[:1])
    out, jv = torch.func.jvp(model, (x[:1],), (v,))
    _, vjp_fn = torch.func.vjp(model, x[:1])
    (jtu,) = vjp_fn(u)
    lhs, rhs = float((u * jv).sum()), float((jtu * v).sum())
    assert abs(lhs - rhs) <= 1e-4 * max(abs(lhs), 1e-3)
    assert float(jv.detach().abs().max()) > 0


# ---------------------------------------------------------------- loader errors

def test_loaders_report_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name, (loader, default) in IDENTITY_NETWORKS.items():
        with pytest.raises(MissingCheckpointError, match=default.replace(".", r"\.")):
            loader(default)


def test_loader_reads_wrapped_prefixed_file(tmp_path):
    """File path: ``{"state_dict": {"module.<key>": ...}}`` is unwrapped and loads into sphere20."""
    state = {f"module.{k}": torch.randn_like(v) for k, v in SphereFace().state_dict().items()}
    path = tmp_path / "net_sphere20_data_vggface2_acc_9955.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = load_sphere20(path)
    assert torch.equal(loaded.fc.weight, state["module.fc.weight"])
    assert loaded.checkpoint_path == str(path)  # recorded for the bundle's checkpoint hashes


def test_loaders_report_truncated_and_wrong_files(tmp_path):
    good = tmp_path / "tiny.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(2, 4)}, good)
    truncated = tmp_path / "model_ir_se50.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CorruptCheckpointError, match="model_ir_se50.pth"):
        load_ir_se50(truncated)
    with pytest.raises(CorruptCheckpointError, match=r"IR-SE50.*missing.*input_layer\.0\.weight"):
        load_ir_se50(good)
    with pytest.raises(CorruptCheckpointError, match="iResNet"):
        load_iresnet(good)
    not_a_state = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_state)
    with pytest.raises(CorruptCheckpointError, match="state dict"):
        load_sphere20(not_a_state)


def test_wrong_network_checkpoint_names_the_difference(sphere, arcface_dir):
    with pytest.raises(CorruptCheckpointError, match=r"sphere20.*missing.*unexpected"):
        load_sphere20({k: torch.zeros(1) for k in ["input_layer.0.weight", "fc.weight"]})
    bad = dict(sphere.state_dict())
    bad["fc.weight"] = torch.zeros(512, 100)
    with pytest.raises(CorruptCheckpointError, match=r"wrong shape.*fc\.weight \[512, 100\]"):
        load_sphere20(bad)


def test_load_identity_encoder_by_name(arcface_dir):
    state = state_from_manifest(read_manifest(arcface_dir / "manifest_cosface_sphere20.json"))
    model = load_identity_encoder("sphere20", state)
    assert isinstance(model, SphereFace) and model.embedding_dim == 1024
    with pytest.raises(ValueError, match="unknown identity network"):
        load_identity_encoder("facenet")
