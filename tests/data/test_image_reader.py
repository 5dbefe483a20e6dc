"""ipsb's one image reader on odd files the tests make themselves: 16-bit gray, CMYK, palette,
EXIF-rotated, RGBA/LA, 1-bit, float TIFF, and empty, truncated or non-image files."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from ipsb.data.image_folder import load_image
from ipsb.data.image_reader import ImageReadError, load_rgb, read_rgb, to_rgb_uint8


def _photo(h=48, w=64) -> np.ndarray:
    """A smooth colour test image with distinct corners, uint8 [h,w,3]."""
    y, x = np.mgrid[:h, :w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)
    img[:8, :8] = (255, 0, 0)  # a red top-left corner marks the orientation
    return img


def test_reader_16bit_gray_scales_by_range_and_matches_its_8bit_copy(tmp_path):
    gray8 = _photo()[..., 1]
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit grayscale PNG
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
        naive = np.asarray(im.convert("RGB"))  # what a plain PIL convert gives: saturated
    assert (naive == 255).mean() > 0.9
    got = read_rgb(tmp_path / "g16.png")
    assert got.dtype == np.uint8 and got.shape == (48, 64, 3)
    np.testing.assert_array_equal(got, read_rgb(tmp_path / "g8.png"))
    np.testing.assert_array_equal(got[..., 0], gray8)
    # the DataModules read the same way
    Image.fromarray(gray8[:48, :48].astype(np.uint16) * 257).save(tmp_path / "sq16.png")
    Image.fromarray(gray8[:48, :48]).save(tmp_path / "sq8.png")
    assert np.array_equal(load_image(tmp_path / "sq16.png").numpy(), load_image(tmp_path / "sq8.png").numpy())


def test_reader_16bit_gray_photo_still_has_its_face(tmp_path):
    """A 16-bit grayscale photo is found by dlib exactly like its 8-bit copy (saturated, it had no face)."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from skimage import data

    from ipsb.data.align import FaceAligner

    gray = (data.astronaut().astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "astronaut16.png")
    Image.fromarray(gray).save(tmp_path / "astronaut8.png")
    aligner = FaceAligner()
    lm16 = aligner.detect(read_rgb(tmp_path / "astronaut16.png"))
    assert (lm16 == aligner.detect(read_rgb(tmp_path / "astronaut8.png"))).all()


def test_reader_cmyk_jpeg_is_converted_not_taken_as_rgba(tmp_path):
    rgb = _photo()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK" and np.asarray(im).shape[2] == 4
        from_pil = to_rgb_uint8(im)  # a PIL image handed to the aligner is converted by its mode too
    got = read_rgb(tmp_path / "cmyk.jpg")
    np.testing.assert_array_equal(from_pil, got)
    assert got.shape == rgb.shape
    assert np.abs(got.astype(int) - rgb).mean() < 4
    assert tuple(got[2, 2]) == pytest.approx((255, 0, 0), abs=12)


def test_reader_palette_with_and_without_transparency(tmp_path):
    rgb = _photo()
    pal = Image.fromarray(rgb).quantize(64)
    pal.save(tmp_path / "p.png")
    expected = np.asarray(pal.convert("RGB"))
    got = read_rgb(tmp_path / "p.png")
    np.testing.assert_array_equal(got, expected)  # the palette's colours, not its indices
    assert np.abs(got.astype(int) - rgb).mean() < 12  # 64 colours for a gradient
    with Image.open(tmp_path / "p.png") as im:
        as_indices = to_rgb_uint8(np.asarray(im))  # the indices taken as gray levels: a wrong image
    assert np.abs(as_indices.astype(int) - rgb).mean() > 40
    pal.save(tmp_path / "pt.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns if palette transparency is converted straight to RGB
        np.testing.assert_array_equal(read_rgb(tmp_path / "pt.png"), expected)


@pytest.mark.parametrize("orientation,turns", [(3, 2), (6, -1), (8, 1)])
def test_reader_applies_exif_orientation(tmp_path, orientation, turns):
    stored = _photo()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "phone.jpg") as im:
        decoded = np.asarray(im)  # the pixels as stored, before the EXIF rotation
    got = read_rgb(tmp_path / "phone.jpg")
    np.testing.assert_array_equal(got, np.rot90(decoded, turns))  # np.rot90: counter-clockwise
    red_corner = {3: (-1, -1), 6: (0, -1), 8: (-1, 0)}[orientation]
    assert got[red_corner][0] > 200 and got[red_corner][1] < 60


def test_reader_alpha_and_gray_modes(tmp_path):
    rgb = _photo()
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgba.png"), rgb)  # alpha dropped, colours kept
    la = np.stack([rgb[..., 0], np.full(rgb.shape[:2], 200, np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "la.png"), np.repeat(rgb[..., :1], 3, 2))
    Image.fromarray(rgb[..., 0] > 128).save(tmp_path / "bw.png")  # mode "1"
    bw = read_rgb(tmp_path / "bw.png")
    assert set(np.unique(bw)) == {0, 255} and ((bw[..., 0] == 255) == (rgb[..., 0] > 128)).all()


def test_reader_float_tiff(tmp_path):
    f = _photo()[..., 2].astype(np.float32) / 255
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_rgb(tmp_path / "f.tif")[..., 0], _photo()[..., 2])
    Image.fromarray(f * 1000, "F").save(tmp_path / "hdr.tif")
    with pytest.raises(ImageReadError, match=r"hdr\.tif.*\[0,1\]"):
        read_rgb(tmp_path / "hdr.tif")


def test_reader_bad_files_raise_one_line_naming_the_file(tmp_path):
    rgb = _photo(96, 128)
    Image.fromarray(rgb).save(tmp_path / "good.png")
    Image.fromarray(rgb).save(tmp_path / "good.jpg", quality=90)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:400])
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "good.jpg").read_bytes()[:600])
    (tmp_path / "notes.png").write_text("not an image, just text\n" * 20)
    (tmp_path / "folder.png").mkdir()
    cases = {"empty.png": "empty", "cut.png": "truncated or corrupt", "cut.jpg": "truncated or corrupt",
             "notes.png": "not an image", "missing.png": "not found", "folder.png": "not a file"}
    for name, what in cases.items():
        with pytest.raises(ImageReadError, match=what) as e:
            read_rgb(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)
        assert isinstance(e.value, ValueError)
    with pytest.raises(ImageReadError, match="cut.png"):  # the DataModules' reader is the same
        load_image(tmp_path / "cut.png")


def test_load_rgb_takes_paths_and_arrays(tmp_path):
    import ipsb.swap

    rgb = _photo()
    Image.fromarray(rgb).save(tmp_path / "x.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "x.png"), rgb)
    np.testing.assert_array_equal(load_rgb(str(tmp_path / "x.png")), rgb)
    np.testing.assert_array_equal(load_rgb(rgb[..., 0]), to_rgb_uint8(rgb[..., 0]))
    assert ipsb.swap.load_rgb is load_rgb  # `ipsb swap` reads its inputs with this reader
