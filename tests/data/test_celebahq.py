"""CelebA-HQ pairs Dataset / DataModule on tiny test-made images."""
import numpy as np
import pytest
import torch
from PIL import Image

from ipsb.data.celebahq import CelebAHQDataModule, read_pairs


def make_images(root, n=5, size=16):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 20 * i, np.uint8)).save(root / f"{i}.png")
    return root


def test_celebahq_pairs_items(tmp_path):
    imgs = make_images(tmp_path / "img")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# source target\n0.png 3.png\n\n4.png, 1.png\n")
    dm = CelebAHQDataModule(str(imgs), str(pairs), image_size=8, batch_size=2)
    batch = next(iter(dm.test_dataloader()))
    assert batch["sample_index"].tolist() == [0, 1]
    assert batch["source_name"] == ["0.png", "4.png"] and batch["target_name"] == ["3.png", "1.png"]
    assert batch["source"].shape == (2, 3, 8, 8)
    torch.testing.assert_close(batch["target"][:, 0, 0, 0], torch.tensor([60, 20]) / 127.5 - 1)
    assert dm.dataset.files() == [f"{i}.png" for i in range(5)]
    pairs.write_text("0.png 9.png\n")
    with pytest.raises(ValueError, match="9.png"):
        read_pairs(pairs, imgs)
    pairs.write_text("0.png\n")
    with pytest.raises(ValueError, match="SOURCE TARGET"):
        read_pairs(pairs, imgs)
