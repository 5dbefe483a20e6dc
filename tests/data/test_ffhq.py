"""FFHQ image folder Dataset / DataModule on tiny test-made images."""
import numpy as np
import pytest
from PIL import Image

from ipsb.data.image_folder import FFHQDataModule, ImageFolderDataset


def make_images(root, n=5, size=16):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 20 * i, np.uint8)).save(root / f"{i}.png")
    return root


def test_ffhq_folder(tmp_path):
    imgs = make_images(tmp_path / "ffhq" / "00000", n=6)
    ds = ImageFolderDataset(tmp_path / "ffhq", image_size=16)
    assert ds.files() == [f"00000/{i}.png" for i in range(6)]
    it = ds[2]
    assert it["sample_index"] == 2 and it["image"].shape == (3, 16, 16)
    assert it["image"].min().item() == pytest.approx(40 / 127.5 - 1)
    dm = FFHQDataModule(str(tmp_path / "ffhq"), image_size=8, batch_size=4, val_fraction=1 / 3)
    dm.setup("fit")
    assert len(dm.train_indices) == 4 and dm.val_indices == [4, 5]
    assert next(iter(dm.val_dataloader()))["image"].shape == (2, 3, 8, 8)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(imgs / "wide.png")
    with pytest.raises(ValueError, match="square"):
        ImageFolderDataset(tmp_path / "ffhq")[6]
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path / "empty")
