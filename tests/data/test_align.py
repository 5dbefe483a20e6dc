"""Real face alignment on skimage's astronaut photo (public domain): dlib, FFHQ quad, paste back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")
skdata = pytest.importorskip("skimage.data")

from ipsb.data import ffhq_alignment as fa  # noqa: E402
from ipsb.data.align import FaceAligner, NoFaceError, image_to_tensor, paste_back, to_rgb_uint8  # noqa: E402


@pytest.fixture(scope="module")
def photo():
    return skdata.astronaut()  # 512x512 RGB uint8


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner(output_size=256)


@pytest.fixture(scope="module")
def aligned(aligner, photo):
    return aligner.align(photo, name="astronaut.png")


def _box_center(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def test_align_picks_the_face_not_the_patch(aligner, photo, aligned):
    dets = aligner.detections(photo)
    assert len(dets) == 2  # face and mission patch
    (face_box, face_score), = [d for d in dets if d[1] == max(s for _, s in dets)]
    patch_box = [b for b, s in dets if b != face_box][0]
    assert _box_center(face_box)[1] < 200 < _box_center(patch_box)[1]  # face above, patch on the chest
    lm = aligned.landmarks
    assert lm.shape == (68, 2)
    assert (lm[:, 0] > face_box[0] - 20).all() and (lm[:, 0] < face_box[2] + 20).all()
    assert (lm[:, 1] > face_box[1] - 20).all() and (lm[:, 1] < face_box[3] + 20).all()
    assert aligned.image.shape == (3, 256, 256) and aligned.image.min() >= -1 and aligned.image.max() <= 1


def test_align_select_largest(photo, aligner):
    largest = FaceAligner(output_size=256, select="largest")
    dets = aligner.detections(photo)
    area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731
    biggest = max(dets, key=lambda d: area(d[0]))[0]
    lm = largest.detect(photo)
    c = lm.mean(0)
    assert biggest[0] <= c[0] <= biggest[2] and biggest[1] <= c[1] <= biggest[3]
    with pytest.raises(ValueError, match="select"):
        FaceAligner(select="last")


def test_align_quad_corners_map_to_crop_corners(aligned):
    torch.testing.assert_close(aligned.quad, fa.ffhq_quad(aligned.landmarks))
    mapped = fa.apply_matrix(aligned.matrix, aligned.quad)
    err = (mapped - fa.crop_corners(256)).abs().max().item()
    assert err < 0.5
    assert err < 1e-6  # the matrix is exact, the 0.5 px acceptance is loose


def test_align_landmarks_redetected_in_crop(aligner, aligned):
    """The crop really shows the face where the matrix says: dlib on the crop agrees within 2 px."""
    crop_u8 = ((aligned.image + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    again = aligner.detect(crop_u8)
    mapped = fa.apply_matrix(aligned.matrix, aligned.landmarks)
    assert (mapped - again).norm(dim=-1).mean() < 2.0


def test_align_inverse_warp_round_trip(photo, aligned):
    original = image_to_tensor(photo)
    pasted = paste_back(original, aligned.image, aligned.matrix)
    inv = torch.linalg.inv(aligned.matrix)
    full = fa.warp(fa.feather_mask(256, 16), inv, photo.shape[:2], mode="bilinear")[0, 0]
    region = full >= 1
    assert region.sum() > 15000
    err = ((pasted - original).abs() / 2)[:, region].mean().item()  # [0,1] scale
    assert err < 2 / 255
    assert torch.equal(pasted[:, full == 0], original[:, full == 0])


def test_align_paste_back_outside_bit_identical(photo, aligned):
    black = -torch.ones_like(aligned.image)
    out = paste_back(photo, black, aligned.matrix, feather=8)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    changed = (out != photo).any(-1)
    # only pixels inside the quad changed; everything else bit-identical
    inside_quad = fa.warp(torch.ones(1, 1, 256, 256), torch.linalg.inv(aligned.matrix), photo.shape[:2],
                          mode="bilinear")[0, 0].numpy() > 0
    assert changed.any() and not changed[~inside_quad].any()
    centre = fa.apply_matrix(torch.linalg.inv(aligned.matrix), torch.tensor([[127.5, 127.5]]))[0].round().long()
    assert (out[centre[1], centre[0]] == 0).all()
    as_tensor = paste_back(torch.from_numpy(photo), black, aligned.matrix, feather=8)
    assert torch.equal(as_tensor, torch.from_numpy(out))


def test_align_no_face_error_names_image(aligner):
    blank = np.full((120, 160, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="blank.jpg") as e:
        aligner.align(blank, name="blank.jpg")
    assert isinstance(e.value, ValueError)
    with pytest.raises(NoFaceError, match="160x120"):
        aligner.detect(blank)


def test_align_grayscale_rgba_16bit(aligner, photo, aligned):
    gray = (photo.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)
    lm_gray = aligner.detect(gray)
    assert (lm_gray - aligned.landmarks).norm(dim=-1).mean() < 6
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 7, np.uint8)], -1)
    assert torch.equal(aligner.detect(rgba), aligned.landmarks)
    sixteen = photo.astype(np.uint16) * 257
    assert torch.equal(aligner.detect(sixteen), aligned.landmarks)


def test_align_to_rgb_conversions():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_rgb_uint8(g).shape == (3, 4, 3) and (to_rgb_uint8(g)[..., 2] == g).all()
    assert (to_rgb_uint8(g.astype(np.uint16) * 257) == to_rgb_uint8(g)).all()
    assert (to_rgb_uint8(np.stack([g, g * 0 + 9], -1))[..., 0] == g).all()
    assert (to_rgb_uint8(g / 255.0) == to_rgb_uint8(g)).all()
    t = torch.zeros(3, 3, 4)
    assert (to_rgb_uint8(t) == 128).all()
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        to_rgb_uint8(g * 2.0)
    with pytest.raises(ValueError):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))


def test_align_ffhq_quad_hand_computed():
    lm = np.zeros((68, 2))
    lm[36:42] = (40, 50)
    lm[42:48] = (60, 50)
    lm[48] = (42, 80)
    lm[54] = (58, 80)
    # eye_to_eye (20,0), eye_to_mouth (0,30): x = (20,0) - (-30,0) -> (1,0) * max(40, 54); c = (50,53)
    expected = torch.tensor([[-4.0, -1.0], [-4.0, 107.0], [104.0, 107.0], [104.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(fa.ffhq_quad(lm), expected)
    with pytest.raises(ValueError, match="68"):
        fa.ffhq_quad(np.zeros((5, 2)))


def test_align_shrink_and_1024_paths(photo, aligned):
    """A 2x upscaled photo to 64 px goes through FFHQ's pre-shrink; 1024 output; matrices stay exact."""
    big = np.repeat(np.repeat(photo, 2, 0), 2, 1)
    lm_big = aligned.landmarks * 2 + 0.5
    small = FaceAligner(output_size=64)
    assert fa.shrink_factor(fa.ffhq_quad(lm_big), 64) > 1
    out = small.align_landmarks(big, lm_big)
    assert out.image.shape == (3, 64, 64)
    assert (fa.apply_matrix(out.matrix, out.quad) - fa.crop_corners(64)).abs().max() < 1e-6
    ref = torch.nn.functional.interpolate(aligned.image[None], size=(64, 64), mode="area")[0]
    assert (out.image - ref).abs().mean() < 0.05
    big_out = FaceAligner(output_size=1024, transform_size=512).align_landmarks(photo, aligned.landmarks)
    assert big_out.image.shape == (3, 1024, 1024)
    assert (fa.apply_matrix(big_out.matrix, big_out.quad) - fa.crop_corners(1024)).abs().max() < 1e-6


def test_align_cli(tmp_path, photo):
    import json

    from PIL import Image

    from ipsb.cli import main

    Image.fromarray(photo).save(tmp_path / "astronaut.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "blank.png")
    code = main(["align", str(tmp_path / "astronaut.png"), str(tmp_path / "blank.png"),
                 "--out", str(tmp_path / "out"), "--size", "128"])
    assert code == 1  # the blank image has no face
    crop = np.asarray(Image.open(tmp_path / "out" / "astronaut.png"))
    record = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    assert crop.shape == (128, 128, 3) and not (tmp_path / "out" / "blank.png").exists()
    mapped = fa.apply_matrix(torch.tensor(record["matrix"], dtype=torch.float64),
                             torch.tensor(record["quad"], dtype=torch.float64))
    assert (mapped - fa.crop_corners(128)).abs().max() < 1e-6
