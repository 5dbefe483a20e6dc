"""FaceSwapper on a real photograph with the toy networks, and the demo helper swap_pairs.

Alignment is real (dlib on ``skimage.data.astronaut()``); generator, stages and inversion are the
toy world's (briefly trained checkpoints), so the swapped face itself is not meant to look good: the
tests check the pipeline end to end and that nothing outside the pasted region changes.
"""
import numpy as np
import pytest
import torch
from skimage import data

from helpers.blend_world import cached_checkpoints, swapper
from ipsb.backbone.bundle import COMPONENTS, FaceBackbone
from ipsb.data.align import NoFaceError
from ipsb.swap import FaceSwapper, paste_face, swap_pairs


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return cached_checkpoints(tmp_path_factory)


@pytest.fixture(scope="module")
def toy_swapper(ckpts):
    return swapper(ckpts)


def test_swap_astronaut_end_to_end_leaves_outside_bit_identical(toy_swapper):
    target = data.astronaut()
    source = np.ascontiguousarray(target[:, ::-1])            # the mirrored photo as the source face
    out, region = toy_swapper.swap_image(source, target, return_region=True)
    assert out.shape == target.shape and out.dtype == np.uint8
    assert np.array_equal(out[~region], target[~region])      # bit-identical outside the pasted region
    changed = (out != target).any(-1)
    assert changed.sum() > 200                                 # the face was replaced
    assert not (changed & ~region).any()
    # the pasted region is the face: a small part of the frame, around dlib's landmarks
    lms = toy_swapper.aligner.detect(target)
    ys, xs = np.nonzero(region)
    assert 0.005 < region.mean() < 0.25
    cx, cy = lms.mean(0).tolist()
    assert abs(xs.mean() - cx) < 40 and abs(ys.mean() - cy) < 40


def test_swap_image_without_a_face_names_it(toy_swapper):
    blank = np.zeros((128, 128, 3), np.uint8)
    with pytest.raises(NoFaceError, match="blank.png"):
        toy_swapper.swap_image(data.astronaut(), blank, target_name="blank.png")


def test_swap_pairs_gives_every_stage_for_demo_grids(ckpts, toy_swapper):
    bb = toy_swapper.backbone
    w_s, w_t = bb.sample_wplus(3, 11, 0.7), bb.sample_wplus(3, 12, 0.7)
    grid = swap_pairs(toy_swapper, w_s, w_t)
    r = bb.generator.resolution
    assert list(grid) == ["source", "target", "stage1", "stage2", "final"]
    for k, v in grid.items():
        assert v.shape == (3, 3, r, r) and v.min() >= -1 and v.max() <= 1, k
    torch.testing.assert_close(grid["target"], bb.generator.synthesis(w_t), rtol=0, atol=1e-4)
    assert (grid["final"] - grid["stage2"]).abs().mean() > 1e-4     # the trained MSFT blended
    # images work too (inverted first), and without stage 3 the final image is stage 2's
    no_blend = swapper(ckpts, blend=False)
    out = swap_pairs(no_blend, grid["source"], grid["target"])
    assert torch.equal(out["final"], out["stage2"])
    with pytest.raises(ValueError, match="pair up"):
        swap_pairs(toy_swapper, w_s, w_t[:2])
    with pytest.raises(ValueError, match="images"):
        swap_pairs(toy_swapper, torch.zeros(3, 5), w_t)


def test_swap_paste_face_changes_only_the_masked_region():
    original = (np.arange(40 * 50 * 3) % 251).astype(np.uint8).reshape(40, 50, 3)
    crop = torch.ones(3, 16, 16)
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    matrix = torch.tensor([[1.0, 0, -10], [0, 1, -5], [0, 0, 1]], dtype=torch.float64)  # crop at (10,5)
    out, region = paste_face(original, crop, mask, matrix, feather=1)
    assert np.array_equal(out[~region], original[~region])
    assert region[5 + 8, 10 + 8] and not region[5 + 1, 10 + 1] and region.sum() <= 10 * 10
    assert (out[5 + 8, 10 + 8] == 255).all()


def test_swap_bad_settings_error(ckpts):
    with pytest.raises(ValueError, match="inversion must be"):
        swapper(ckpts, inversion="e4e")
    toy = swapper(ckpts)
    bare = FaceBackbone(**{name: getattr(toy.backbone, name) for name in COMPONENTS if name != "encoder"})
    with pytest.raises(ValueError, match="needs a backbone with an encoder"):
        FaceSwapper(bare, toy.stage2, inversion="encoder")
    with pytest.raises(ValueError, match="smooth_latents"):
        swapper(ckpts, smooth_latents=1.0)
    from ipsb.checkpoints import MissingCheckpointError
    with pytest.raises(MissingCheckpointError, match="stage-3 checkpoint 'nothere.ckpt'"):
        FaceSwapper.from_checkpoints(ckpts["mapping"], ckpts["detail"], "nothere.ckpt",
                                     swapper(ckpts).backbone)


def test_swap_video_landmark_smoothing_is_an_ema_that_restarts_on_jumps(toy_swapper):
    prev = torch.tensor([[0.0, 0.0], [100.0, 100.0]])
    near = prev + 2.0
    a = toy_swapper.smooth_landmarks
    torch.testing.assert_close(toy_swapper._smooth_landmarks(near, prev), a * prev + (1 - a) * near)
    far = prev + 50.0                                   # moved by > 10% of the face: no smoothing
    assert torch.equal(toy_swapper._smooth_landmarks(far, prev), far)
    assert torch.equal(toy_swapper._smooth_landmarks(near, None), near)
