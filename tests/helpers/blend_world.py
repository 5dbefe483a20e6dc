"""Toy-world fixtures for the stage-3 / swapper tests: briefly trained stage-1 and stage-2 checkpoints.

Stage 1 uses the oracle basis of :mod:`helpers.swap_world` (the toy generator's ground truth) and is
trained for a few steps only: the stage-3 and swapper tests check blending and plumbing, not the
quality of stages 1-2 (their own tests and benchmarks do that).
"""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer, seed_everything

from helpers.swap_world import save_oracle_basis, toy_backbone
from ipsb.data.latents import LatentPairDataModule
from ipsb.stages.base import adamw


def _fit(module, root: Path, steps: int, name: str, seed: int) -> Path:
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, default_root_dir=str(root), deterministic=True)
    trainer.fit(module, LatentPairDataModule(num_train_pairs=4 * steps, num_val_pairs=2, batch_size=4,
                                             val_batch_size=2, truncation_psi=0.7, seed=seed))
    path = root / f"{name}.ckpt"
    trainer.save_checkpoint(str(path))
    return path


def stage_checkpoints(root: Path, mapping_steps: int = 2, detail_steps: int = 1) -> tuple[Path, Path]:
    """-> (stage-1 checkpoint, stage-2 checkpoint) trained briefly in ``root`` on the toy backbone."""
    from ipsb.stages.detail_module import DetailModule
    from ipsb.stages.mapping_module import MappingModule

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    basis = save_oracle_basis(root / "basis.pt")
    seed_everything(0)
    mapping = MappingModule(toy_backbone(), basis=str(basis), hidden_dim=32, depth=2, optimizer=adamw(1e-2))
    mapping_ckpt = _fit(mapping, root, mapping_steps, "mapping", seed=0)
    seed_everything(0)
    detail = DetailModule(toy_backbone(), mapping_checkpoint=str(mapping_ckpt), optimizer=adamw(0.02))
    detail_ckpt = _fit(detail, root, detail_steps, "detail", seed=1)
    return mapping_ckpt, detail_ckpt


_CACHE: dict = {}


def blend_checkpoint(root: Path, detail_ckpt: Path, steps: int = 2) -> Path:
    """A stage-3 (BlendModule) checkpoint trained ``steps`` steps (lr 1e-2) on the toy backbone."""
    from ipsb.stages.blend_module import BlendModule

    seed_everything(0)
    blend = BlendModule(toy_backbone(), detail_checkpoint=str(detail_ckpt), optimizer=adamw(1e-2), hidden=16)
    return _fit(blend, Path(root), steps, "blend", seed=2)


def cached_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """``{"mapping", "detail", "blend"}`` checkpoints, made once per test session."""
    if "ckpts" not in _CACHE:
        root = tmp_path_factory.mktemp("stage_ckpts")
        mapping, detail = stage_checkpoints(root, mapping_steps=1, detail_steps=1)
        _CACHE["ckpts"] = {"mapping": mapping, "detail": detail, "blend": blend_checkpoint(root, detail)}
    return _CACHE["ckpts"]


def basis_module_checkpoint(root: Path) -> Path:
    """``root/basis.ckpt``: a Lightning checkpoint of an untrained BasisModule (a stage file of the wrong
    kind wherever a mapping, detail or blend checkpoint is expected)."""
    from ipsb.stages.basis_module import BasisModule

    basis = BasisModule(toy_backbone(), output_path=str(root / "basis_out.pt"))
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(basis)
    trainer.save_checkpoint(root / "basis.ckpt")
    return root / "basis.ckpt"


def toy_backbone_yaml(path: Path, resolution: int = 32) -> Path:
    """Write the toy backbone config at ``resolution`` px (what :func:`toy_backbone` builds) to ``path``."""
    import yaml

    from helpers.swap_world import TOY_BACKBONE

    cfg = yaml.safe_load(TOY_BACKBONE.read_text())
    args = cfg["init_args"]
    args["generator"].setdefault("init_args", {})["resolution"] = resolution
    args["face_model"].setdefault("init_args", {})["image_size"] = resolution
    args["renderer"].setdefault("init_args", {})["image_size"] = resolution
    Path(path).write_text(yaml.safe_dump(cfg))
    return Path(path)


def swapper(ckpts: dict, blend: bool = True, **kwargs):
    """A :class:`FaceSwapper` on the cached toy checkpoints (fast settings unless overridden)."""
    from ipsb.swap import FaceSwapper

    kwargs.setdefault("invert_steps", 4)
    kwargs.setdefault("invert_perceptual", 0.0)
    return FaceSwapper.from_checkpoints(ckpts["mapping"], ckpts["detail"], ckpts["blend"] if blend else None,
                                        toy_backbone(), **kwargs)
