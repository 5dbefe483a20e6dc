"""Run BasisModule on the tiny backbone with N CPU processes (DDP): ``python basis_ddp_run.py DEVICES OUT``.

Used by test_basis_module.py; a script because Lightning's ddp launcher re-runs ``sys.argv``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from lightning.pytorch import Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from basis_tiny import tiny_backbone  # noqa: E402
from ipsb.data.basis_samples import BasisSampleDataModule  # noqa: E402
from ipsb.stages.basis_module import BasisModule  # noqa: E402


def run(devices: int, out: str, num_samples: int = 7, batch_size: int = 2, callbacks=(), ckpt_path=None,
        **module_args) -> BasisModule:
    torch.manual_seed(0)
    module = BasisModule(tiny_backbone(), output_path=out, layers="1..4", k={"pose": 2, "exp": 3, "light": 2},
                         truncation_psi=0.8, chunk_size=4, **module_args)
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    if checkpointing:   # stage checkpoints record the backbone's config; the tiny world is built in code
        module.backbone.config = {"built_by": "tests/basis/basis_tiny.py:tiny_backbone"}
    trainer = Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                      precision="64-true", max_epochs=1, logger=False,
                      enable_checkpointing=checkpointing,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(module, BasisSampleDataModule(num_samples=num_samples, batch_size=batch_size), ckpt_path=ckpt_path)
    return module


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(int(sys.argv[1]), sys.argv[2])
