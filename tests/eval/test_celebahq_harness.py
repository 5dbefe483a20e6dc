"""The CelebA-HQ harness on a folder of toy renders: FID (cached), bounds, precomputed swaps, table."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness_helpers import quiet_trainer, toy_networks
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.data.celebahq import CelebAHQDataModule
from ipsb.eval.evaluator import EvaluationModule
from ipsb.eval.methods import CopySource, CopyTarget
from ipsb.eval.networks import MetricNetworks

N_IMAGES = 8
PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (1, 0), (3, 6)]   # (source, target); 6 distinct sources


def to_png(img, path):
    px = ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(px)).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("celebahq")
    (root / "images").mkdir()
    gen = ToyGenerator(seed=0).eval()
    with torch.no_grad():
        images = gen.synthesis(gen.sample_wplus(N_IMAGES, seed=3, truncation_psi=0.7))
    for i, img in enumerate(images):
        to_png(img, root / "images" / f"{i}.png")
    (root / "pairs.txt").write_text("# source target\n" + "".join(f"{s}.png {t}.png\n" for s, t in PAIRS))
    return root


@pytest.fixture(scope="module")
def nets():
    return MetricNetworks.from_config(toy_networks(fid=True))


def dm(folder, swaps=None):
    return CelebAHQDataModule(str(folder / "images"), str(folder / "pairs.txt"), image_size=64, swaps=swaps,
                              batch_size=4)


def run(module, datamodule):
    quiet_trainer().test(module, datamodule=datamodule, verbose=False)
    return {r["method"]: r for r in module.results}


def test_celebahq_harness_rows_fid_cache_and_table(folder, nets, tmp_path):
    cache = tmp_path / "fid_cache"
    module = EvaluationModule(nets, "celebahq", methods=[CopyTarget(), CopySource()], output_dir=str(tmp_path),
                              fid_cache_dir=str(cache))
    rows = run(module, dm(folder))
    tgt, src = rows["copy target"], rows["copy source"]
    assert tgt["num_items"] == src["num_items"] == len(PAIRS)
    assert tgt["exp_l2"] == pytest.approx(0, abs=1e-6) and tgt["pose_deg"] == pytest.approx(0, abs=1e-5)
    assert src["id_cosine"] == pytest.approx(1, abs=1e-5) and src["id_top1_pct"] == 100.0
    assert tgt["fid"] > 0 and src["fid"] > 0
    cached = list(cache.glob("fid_real_*.pt"))
    assert len(cached) == 1
    # second run: the real statistics come from the cache and give the same FIDs
    stamp = cached[0].stat().st_mtime_ns
    again = EvaluationModule(nets, "celebahq", methods=[CopyTarget(), CopySource()], output_dir=str(tmp_path),
                             table_name="again", fid_cache_dir=str(cache))
    rows2 = run(again, dm(folder))
    assert cached[0].stat().st_mtime_ns == stamp
    for name in rows:
        assert rows2[name]["fid"] == pytest.approx(rows[name]["fid"], rel=1e-6)
    table = json.loads((tmp_path / "celebahq.json").read_text())
    assert table["benchmark"] == "celebahq" and table["manifest"]["counts"] == {"pairs": len(PAIRS), "images": N_IMAGES}
    assert "fid" in table["networks"]["files"]
    assert [r["method"] for r in table["reference_rows"]][:4] == ["MegaFS", "RAFS", "FSLSD", "StyleIPSB"]
    assert "| StyleIPSB | paper | 9.37 |" in (tmp_path / "celebahq.md").read_text()


def test_celebahq_fid_matches_direct_computation(folder, nets, tmp_path):
    """Without a cache, the harness' FID equals an FID computed by hand on the same images."""
    from ipsb.data.image_folder import load_image
    from ipsb.metrics import FID

    module = EvaluationModule(nets, "celebahq", methods=[CopySource()], output_dir=str(tmp_path))
    got = run(module, dm(folder))["copy source"]["fid"]
    fid = FID(feature=nets.fid)
    real = torch.stack([load_image(folder / "images" / f"{i}.png", 64) for i in range(N_IMAGES)])
    fake = torch.stack([load_image(folder / "images" / f"{s}.png", 64) for s, _ in PAIRS])
    fid.update(real, real=True, sample_index=torch.arange(N_IMAGES))
    fid.update(fake, real=False, sample_index=torch.arange(len(PAIRS)))
    assert got == pytest.approx(float(fid.compute()), rel=1e-5)


def test_celebahq_precomputed_swaps(folder, nets, tmp_path):
    swaps = tmp_path / "swaps"
    swaps.mkdir()
    for i, (_, t) in enumerate(PAIRS):
        Image.open(folder / "images" / f"{t}.png").save(swaps / f"{i:06d}.png")
    module = EvaluationModule(nets, "celebahq", methods=[CopyTarget()], data_swaps_name="targets as png",
                              output_dir=str(tmp_path))
    rows = run(module, dm(folder, swaps=str(swaps)))
    for key in ("fid", "exp_l2", "pose_deg", "id_cosine", "id_top1_pct", "id_top5_pct"):
        assert rows["targets as png"][key] == pytest.approx(rows["copy target"][key], rel=1e-5, abs=1e-6), key
