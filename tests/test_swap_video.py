"""``ipsb swap`` on a video and in batch mode: frame count, faceless frames, overwrite protection.

The 12-frame test clip is the astronaut photo (256 px) drifting by a few pixels per frame, with
frame 5 blank (no face). Toy networks, briefly trained checkpoints, 2 inversion steps per frame.
"""
import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.transform import resize

from helpers.blend_world import cached_checkpoints, toy_backbone_yaml
from ipsb.cli import main as ipsb_main
from ipsb.data.video import count_frames, read_frames, write_video

BLANK = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    ckpts = cached_checkpoints(tmp_path_factory)
    root = tmp_path_factory.mktemp("swap_video")
    face = (resize(data.astronaut(), (256, 256), anti_aliasing=True) * 255).round().astype(np.uint8)
    frames = []
    for i in range(12):
        frames.append(np.zeros_like(face) if i == BLANK else np.roll(face, (i % 4, 2 * (i % 3)), (0, 1)))
    clip = root / "clip.mp4"
    write_video(clip, frames, fps=10)                        # lossless, so frames are exact
    source = root / "source.png"
    Image.fromarray(np.ascontiguousarray(face[:, ::-1])).save(source)
    args = ["swap", "--source", str(source), "--mapping", str(ckpts["mapping"]), "--detail", str(ckpts["detail"]),
            "--blend", str(ckpts["blend"]), "--backbone", str(toy_backbone_yaml(root / "toy32.yaml")),
            "--invert-steps", "2", "--no-progress"]
    return {"root": root, "clip": clip, "source": source, "frames": frames, "args": args}


def test_swap_video_writes_every_frame_and_passes_faceless_ones(world, capsys):
    out = world["root"] / "out.mp4"
    assert ipsb_main(world["args"] + ["--target", str(world["clip"]), "--out", str(out)]) == 0
    assert "12 frames, 1 without a face" in capsys.readouterr().out
    assert count_frames(out) == 12
    got = read_frames(out, range(12))
    assert got[0].shape == (256, 256, 3)
    assert np.abs(got[BLANK].astype(int)).max() <= 2                         # the blank frame, unchanged
    diff = [np.abs(got[i].astype(int) - world["frames"][i].astype(int)).mean() for i in range(12)]
    assert all(d < 12 for d in diff)                                          # the rest of the frame kept
    # existing output: refused without --overwrite (file untouched), replaced with it
    before = out.read_bytes()
    assert ipsb_main(world["args"] + ["--target", str(world["clip"]), "--out", str(out)]) == 2
    assert "output exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_swap_image_overwrite_and_batch_folder(world, capsys):
    folder = world["root"] / "targets"
    folder.mkdir()
    Image.fromarray(world["frames"][0]).save(folder / "a.png")
    Image.fromarray(world["frames"][BLANK]).save(folder / "b_blank.png")
    (folder / "notes.txt").write_text("ignored")
    out_dir = world["root"] / "batch_out"
    assert ipsb_main(world["args"] + ["--target", str(folder), "--out", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png"]          # the faceless image is skipped
    assert "b_blank.png: skipped" in capsys.readouterr().err
    first = (out_dir / "a.png").read_bytes()
    # batch mode checks every output first: nothing is written when one exists
    assert ipsb_main(world["args"] + ["--target", str(folder), "--out", str(out_dir)]) == 2
    assert "a.png" in capsys.readouterr().err
    # --overwrite replaces it (a different source gives a different file)
    Image.fromarray(world["frames"][3]).save(world["root"] / "source2.png")
    args = [a if a != str(world["source"]) else str(world["root"] / "source2.png") for a in world["args"]]
    assert ipsb_main(args + ["--target", str(folder / "a.png"), "--out", str(out_dir / "a.png"), "--overwrite"]) == 0
    assert (out_dir / "a.png").read_bytes() != first


def test_swap_cli_rejects_bad_arguments(world, capsys):
    root = world["root"]
    assert ipsb_main(world["args"] + ["--target", str(world["clip"]), "--out", str(root / "x.png")]) == 2
    assert "must end in .mp4" in capsys.readouterr().err
    assert ipsb_main(world["args"] + ["--target", str(root / "none.png"), "--out", str(root / "y.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (root / "x.png").exists() and not (root / "y.png").exists()


def test_swap_mp4_writer_streams_odd_sizes_and_lossless_frames(tmp_path):
    from ipsb.video_io import Mp4Writer, frame_rate

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (33, 47, 3), dtype=np.uint8) for _ in range(3)]
    with Mp4Writer(tmp_path / "odd.mp4", fps=12) as w:               # yuv420p: padded to 34 x 48
        for f in frames:
            w.write(f)
    assert count_frames(tmp_path / "odd.mp4") == 3 and read_frames(tmp_path / "odd.mp4", [0])[0].shape == (34, 48, 3)
    assert frame_rate(tmp_path / "odd.mp4") == 12
    with Mp4Writer(tmp_path / "exact.mp4", fps=5, lossless=True) as w:
        for f in frames:
            w.write(f[:32, :46])
    got = read_frames(tmp_path / "exact.mp4", range(3))
    assert all(np.array_equal(got[i], frames[i][:32, :46]) for i in range(3))
    with pytest.raises(ValueError, match="all frames must be"):
        with Mp4Writer(tmp_path / "bad.mp4") as w:
            w.write(frames[0])
            w.write(frames[0][:10])
