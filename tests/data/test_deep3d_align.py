"""Deep3D's 5-landmark alignment (align_img) against the reference outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ipsb.data.deep3d_align import align_for_deep3d, align_img, extract_5p, pos


@pytest.fixture(scope="module")
def ref(request):
    return torch.load(request.config.rootpath / "tests/fixtures/deep3d/parity_preprocess.pt")


def test_parity_deep3d_align_lm3d_reduction(ref):
    lm3d5 = extract_5p(ref["synthetic_lm3d_68"].numpy())
    np.testing.assert_allclose(lm3d5, ref["lm3d_5_from_load_lm3d"].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["lm5", "lm68"])
def test_parity_deep3d_align_img(ref, case):
    c = ref["cases"][case]
    img, lm3d = ref["src_uint8_hwc"].numpy(), ref["lm3d_5_from_load_lm3d"].numpy()
    out = align_for_deep3d(img, c["lm_input_image_coords"].numpy(), lm3d)
    np.testing.assert_allclose(np.array(out.trans_params), c["trans_params"].numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.landmarks, c["lm_new"].numpy(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(out.image, c["img_224_uint8_hwc"].numpy())
    assert all(type(v) is float for v in out.trans_params)
    # the y-up entry point gives the same with the already flipped landmarks
    same = align_img(img, c["lm_after_yflip"].numpy(), lm3d)
    np.testing.assert_array_equal(same.image, out.image)


def test_deep3d_align_pos_recovers_known_camera():
    rng = np.random.default_rng(0)
    pts3d = rng.normal(size=(5, 3))
    lm2d = 2.5 * pts3d[:, :2] + np.array([10.0, -4.0])
    t, s = pos(lm2d, pts3d)
    np.testing.assert_allclose(t, [10.0, -4.0], atol=1e-9)
    assert abs(s - 2.5) < 1e-9


def test_deep3d_align_bad_input(ref):
    img, lm3d = ref["src_uint8_hwc"].numpy(), ref["lm3d_5_from_load_lm3d"].numpy()
    with pytest.raises(ValueError, match="landmarks"):
        align_img(img, np.zeros((7, 2)), lm3d)
    with pytest.raises(ValueError, match="uint8"):
        align_img(img.astype(np.float32), np.zeros((5, 2)), lm3d)
