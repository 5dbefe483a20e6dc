"""Odd photos read as their 8-bit RGB versions (16-bit gray, CMYK, palette, EXIF-rotated) through
``ipsb align`` and ``ipsb swap``, which share one image reader; unreadable images end in one line.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers.hostile import assert_refused, damaged

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def odd_photos(tmp_path_factory) -> dict:
    """The astronaut (256 px) as plain RGB and in four odd encodings of the same picture."""
    from skimage.transform import resize

    root = tmp_path_factory.mktemp("odd_photos")
    rgb = (resize(skdata.astronaut(), (256, 256), anti_aliasing=True) * 255).round().astype(np.uint8)
    gray8 = np.asarray(Image.fromarray(rgb).convert("L"))
    files = {"rgb": root / "rgb.png", "gray8": root / "gray8.png", "gray16": root / "gray16.png",
             "cmyk": root / "cmyk.jpg", "palette": root / "palette.png", "exif": root / "exif.jpg"}
    Image.fromarray(rgb).save(files["rgb"])
    Image.fromarray(gray8).save(files["gray8"])
    Image.fromarray(gray8.astype(np.uint16) * 257).save(files["gray16"])        # I;16: 0..65535
    Image.fromarray(rgb).convert("CMYK").save(files["cmyk"], quality=95)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(files["palette"])
    exif = Image.Exif()
    exif[0x0112] = 6                              # orientation: display rotated 90 degrees clockwise
    Image.fromarray(np.rot90(rgb, 1)).save(files["exif"], quality=95, exif=exif)   # stored sideways
    return files


def test_odd_image_modes_read_as_their_rgb_versions(odd_photos):
    from ipsb.data.image_reader import read_rgb

    rgb, gray8 = read_rgb(odd_photos["rgb"]).astype(int), read_rgb(odd_photos["gray8"]).astype(int)
    assert np.array_equal(read_rgb(odd_photos["gray16"]), read_rgb(odd_photos["gray8"]))   # scaled, not saturated
    for name, tol in (("cmyk", 4.0), ("palette", 4.0), ("exif", 4.0)):
        got = read_rgb(odd_photos[name]).astype(int)
        assert got.shape == rgb.shape and np.abs(got - rgb).mean() < tol, name
    assert gray8.max() > 200 and gray8.min() < 40


def test_align_finds_the_face_in_every_odd_mode(odd_photos, tmp_path, ipsb):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    names = ("rgb", "gray16", "cmyk", "palette", "exif")
    res = ipsb("align", *[odd_photos[n] for n in names], "--out", tmp_path / "out", "--size", "64")
    assert res.code == 0, res.lines
    crops = {n: np.asarray(Image.open(tmp_path / "out" / f"{n}.png")).astype(int) for n in names}
    gray = crops["rgb"].mean(2)
    for n in ("cmyk", "palette", "exif"):
        assert np.abs(crops[n] - crops["rgb"]).mean() < 8, n            # the same face, the same crop
    assert np.abs(crops["gray16"].mean(2) - gray).mean() < 12             # a gray copy of it


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_swap_names_an_unreadable_source_image_before_building(kind, world, tmp_path, ipsb, swap_args, monkeypatch,
                                                               odd_photos):
    from ipsb.swap import FaceSwapper

    monkeypatch.setattr(FaceSwapper, "from_checkpoints", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    bad = damaged(tmp_path / f"{kind}.png", kind, odd_photos["rgb"])
    res = ipsb(*swap_args(tmp_path / "out.png", source=bad))
    assert_refused(res, "swap", bad)
    assert not (tmp_path / "out.png").exists()


def test_swap_takes_a_16_bit_gray_source_and_a_cmyk_target(odd_photos, tmp_path, ipsb, swap_args):
    """The 16-bit photo is scaled, not saturated to white, so its face is found as in its 8-bit copy."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    args = swap_args(tmp_path / "out.png", source=odd_photos["gray16"])
    args[args.index("--target") + 1] = odd_photos["cmyk"]
    res = ipsb(*args)
    assert res.code == 0, res.lines
    assert Image.open(tmp_path / "out.png").size == (256, 256)
