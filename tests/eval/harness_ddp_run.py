"""Run the FF++ harness on a toy tree with N CPU processes: ``python harness_ddp_run.py TREE DEVICES OUT``.

A script because Lightning's ddp launcher re-runs ``sys.argv``. Writes the table as ``OUT/t.json``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from harness_helpers import quiet_trainer, toy_networks  # noqa: E402
from ipsb.eval.evaluator import EvaluationModule  # noqa: E402
from ipsb.eval.methods import CopySource  # noqa: E402
from ipsb.data.toy_ffpp import ToyFFPPDataModule  # noqa: E402

N_VIDEOS, N_FRAMES, SLOTS = 3, 6, 3


def run(tree: str, devices: int, out: str) -> EvaluationModule:
    torch.manual_seed(0)
    module = EvaluationModule(toy_networks(), "ffpp", methods=[CopySource()], output_dir=out, table_name="t")
    dm = ToyFFPPDataModule(root=tree, num_videos=N_VIDEOS, num_frames=N_FRAMES, frames_per_video=SLOTS,
                           manifest_path=str(Path(out) / "manifest.json"), batch_size=2)
    trainer = quiet_trainer(devices=devices, strategy="ddp" if devices > 1 else "auto")
    trainer.test(module, datamodule=dm, verbose=False)
    return module


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], int(sys.argv[2]), sys.argv[3])
