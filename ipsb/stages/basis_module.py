"""BasisModule: builds the StyleIPSB W+ basis from a frozen backbone with ``ipsb fit``.

Each training step takes a batch of sample indices (:mod:`ipsb.data.basis_samples`), turns them into W+
codes ``w0`` (generator mapping with truncation, or rows of a W+ inversion file), computes the
per-sample Jacobians of the attribute groups and of the identity embedding
(:class:`~ipsb.basis.probe.AttributeProbe`) and adds ``J^T J`` to float64 accumulators. Nothing is
optimised. At the end of fit the accumulators are summed over DDP ranks, every rank solves the
generalized eigenproblem (``self.basis``) and rank 0 writes the :class:`~ipsb.basis.artifact.Basis`
file to ``output_path`` (refusing to overwrite unless ``overwrite``).

Resumable: a checkpoint (Lightning ``ModelCheckpoint``, e.g. ``every_n_train_steps``) holds, under
``checkpoint["ipsb_basis_accumulation"]``, the float64 sums and sample count summed over ranks, the
indices of the samples they contain and the settings that decide what a sample contributes. A run
resumed from it (``ipsb fit --config ... --ckpt_path last``, any number of ranks) loads the sums on
rank 0 and skips the samples already counted; since every sample (its ``w0`` and its random identity
draws) depends only on its index, it ends with the sums of an uninterrupted run, up to float64
summation order. Lightning counts steps by optimizer steps, so each training step makes one step of
a zero-learning-rate SGD over the unused ``ddp_anchor`` parameter: ``global_step``, and with it
``every_n_train_steps`` and ``max_steps``, then count batches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ipsb.backbone.bundle import FaceBackbone
from ipsb.basis.accumulator import GramAccumulator
from ipsb.basis.artifact import Basis
from ipsb.basis.identity_rows import IdentityRows
from ipsb.basis.layers import DEFAULT_LAYERS, layer_mask
from ipsb.basis.probe import DEFAULT_ATTRIBUTE_GROUPS, AttributeProbe, coefficient_columns
from ipsb.data.latents import load_wplus_file
from ipsb.basis.solve import solve_basis
from ipsb.stages.base import StageModule

DEFAULT_K = {"pose": 3, "exp": 10, "light": 5}
#: Added to a sample's seed for its identity sketch draws, so they never reuse its z draw.
IDENTITY_SEED_OFFSET = 1 << 48
#: Checkpoint entry of the accumulated sums (see the module docstring).
RESUME_KEY = "ipsb_basis_accumulation"
#: Settings a resumed run must share with its checkpoint: they decide what each sample contributes.
RESUME_SETTINGS = ("layers", "groups", "use_identity", "truncation_psi", "seed", "wplus_path", "identity_rows")


def _dtype_of(module: nn.Module) -> torch.dtype:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def generator_sha256(backbone: FaceBackbone) -> Optional[str]:
    """sha256 of the generator's checkpoint file(s) (several joined by commas), ``None`` for a
    generator built without files (toy, random)."""
    from ipsb.checkpoints import sha256_file

    files = [p for name, p in backbone.checkpoint_files().items() if name.split(".")[0] == "generator"]
    return ",".join(sha256_file(p) for p in files) or None


def _gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` outside torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class BasisModule(StageModule):
    """Accumulates ``H_g = mean J_g^T J_g`` (and ``H_id``) over samples; solves and saves the basis.

    Args:
        backbone: the frozen :class:`~ipsb.backbone.bundle.FaceBackbone` (``generator``,
            ``regressor``, ``identity``, ``face_model.coeff_groups``), its config dict or YAML path;
            from a config only those components are built (:attr:`backbone_components`).
        output_path: where rank 0 writes the basis file.
        overwrite: replace an existing file at ``output_path``.
        layers: W+ layers the basis may move (``"3..9"``, a list, or null for all).
        groups: ``{basis group: [3DMM coefficient groups]}``; default pose = angle, exp, light = gamma.
        k: ``{basis group: directions kept}``.
        delta: ridge on the identity metric, relative to ``mean diag H_id`` (``relative_delta``).
        use_identity: solve the generalized problem (False: plain Hessian eigenvectors).
        truncation_psi: truncation of sampled w0 towards the mean latent.
        seed: base seed of the sampled z (sample ``i`` uses seed ``seed * 1_000_003 + i``).
        wplus_path: file of W+ inversions to use instead of sampling (row ``i`` = sample ``i``).
        chunk_size: Jacobian rows per reverse pass (bounds memory at 1024 px).
        vectorize: vmap over Jacobian rows (None: automatic, see :func:`~ipsb.basis.jacobian.wplus_jacobian`).
        identity_rows: how ``H_id`` is estimated per sample: ``exact`` (``E`` reverse passes),
            ``sketch:k`` or ``lowrank:q`` (see :mod:`ipsb.basis.identity_rows`; the random draws of
            sample ``i`` are seeded from ``seed`` and ``i``).
    """

    #: only these backbone components are built (e4e, the face parser, HopeNet, LPIPS are not needed)
    backbone_components = ("generator", "face_model", "regressor", "identity")

    def __init__(self, backbone: FaceBackbone, output_path: str = "outputs/basis.pt", overwrite: bool = False,
                 layers: Union[str, list[int], None] = DEFAULT_LAYERS,
                 groups: Optional[dict[str, list[str]]] = None, k: Optional[dict[str, int]] = None,
                 delta: float = 1e-3, relative_delta: bool = True, use_identity: bool = True,
                 truncation_psi: float = 0.7, seed: int = 0, wplus_path: Optional[str] = None,
                 chunk_size: Optional[int] = 16, vectorize: Optional[bool] = None,
                 identity_rows: str = "exact"):
        super().__init__(backbone, optimizer=None)
        self.automatic_optimization = False
        self.output_path, self.overwrite = output_path, overwrite
        self.layers, self.groups = layers, dict(groups or DEFAULT_ATTRIBUTE_GROUPS)
        self.k = dict(k or {g: DEFAULT_K.get(g, 3) for g in self.groups})
        missing = [g for g in self.groups if g not in self.k]
        if missing or set(self.k) - set(self.groups):
            raise ValueError(f"k must name exactly the basis groups {list(self.groups)}, got {list(self.k)}")
        self.delta, self.relative_delta, self.use_identity = float(delta), relative_delta, use_identity
        self.truncation_psi, self.seed, self.wplus_path = float(truncation_psi), int(seed), wplus_path
        self.chunk_size, self.vectorize = chunk_size, vectorize
        self.identity_rows = str(IdentityRows.parse(identity_rows))
        gen = self.backbone.generator
        self.mask = layer_mask(layers, gen.num_ws)
        coeff_groups = getattr(self.backbone.face_model, "coeff_groups", None) or self.backbone.regressor.coeff_groups
        self.columns = coefficient_columns(coeff_groups, self.groups)
        self.accumulator: Optional[GramAccumulator] = None
        self.basis: Optional[Basis] = None
        self._wplus: Optional[torch.Tensor] = None
        self._mean_latent: Optional[torch.Tensor] = None
        self._done: set[int] = set()          # sample indices in the sums (all ranks, as of the last resume)
        self._done_here: list[int] = []       # sample indices this rank added since then
        self._resume: Optional[dict] = None
        # DDP refuses to wrap a module without a trainable parameter; this one never gets a gradient
        # (the zero-lr optimizer of configure_optimizers only makes Lightning count steps).
        self.ddp_anchor = nn.Parameter(torch.zeros(()))

    # ------------------------------------------------------------------ setup
    def _probe(self) -> AttributeProbe:
        bb = self.backbone
        return AttributeProbe(bb.generator, bb.regressor, self.columns, bb.identity if self.use_identity else None,
                              self.mask.to(self.device), self.chunk_size, "const", self.vectorize,
                              self.identity_rows)

    def configure_optimizers(self):
        """Zero-learning-rate SGD over ``ddp_anchor``: nothing is optimised, Lightning counts its steps."""
        return torch.optim.SGD([self.ddp_anchor], lr=0.0)

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero and Path(self.output_path).exists() and not self.overwrite:
            raise FileExistsError(f"basis file '{self.output_path}' already exists; set overwrite: true "
                                  f"(model.init_args.overwrite) or choose another output_path")
        gen = self.backbone.generator
        n = int(self.mask.sum()) * gen.w_dim
        groups = list(self.groups) + (["id"] if self.use_identity else [])
        self.accumulator = GramAccumulator(groups, n, self.device)
        self.basis, self._mean_latent = None, None
        self._done, self._done_here = set(), []
        if self.wplus_path is not None:
            self._wplus = load_wplus_file(self.wplus_path)
            gen.check_wplus(self._wplus)
        self._apply_resume()

    def on_train_start(self) -> None:
        super().on_train_start()
        self._apply_resume()      # strategies that restore checkpoints after setup get here first

    # ------------------------------------------------------------------ resume
    def _resume_settings(self) -> dict:
        return {name: getattr(self, name) for name in RESUME_SETTINGS}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.accumulator is None:
            return
        state = self.accumulator.reduced_state()          # a collective: every rank saves together
        done = set(self._done)
        for part in _gather_objects(self._done_here):
            done.update(part)
        checkpoint[RESUME_KEY] = {**state, "done": torch.tensor(sorted(done), dtype=torch.long),
                                  "settings": self._resume_settings()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resume = checkpoint.get(RESUME_KEY)

    def _apply_resume(self) -> None:
        if self._resume is None or self.accumulator is None:
            return
        saved, now = self._resume.get("settings", {}), self._resume_settings()
        differ = [k for k in RESUME_SETTINGS if saved.get(k) != now[k]]
        if differ:
            raise ValueError("cannot resume this basis run from the checkpoint: its samples were accumulated with "
                             + ", ".join(f"{k}={saved.get(k)!r}" for k in differ) + "; this run has "
                             + ", ".join(f"{k}={now[k]!r}" for k in differ)
                             + ". Resume with the same model settings, or start a new run without --ckpt_path")
        self.accumulator.load_state(self._resume, holder=self.trainer.is_global_zero)
        self._done = set(int(i) for i in self._resume["done"].tolist())
        self._done_here = []
        self._resume = None

    # ------------------------------------------------------------------ samples
    def sample_seed(self, index: int) -> int:
        """Seed of sample ``index``'s z (:meth:`sample_wplus`)."""
        return self.seed * 1_000_003 + int(index)

    def identity_seed(self, index: int) -> int:
        """Seed of sample ``index``'s identity sketch draws (a stream disjoint from the z seeds)."""
        return self.sample_seed(index) + IDENTITY_SEED_OFFSET

    @torch.no_grad()
    def sample_wplus(self, index: torch.Tensor) -> torch.Tensor:
        """Sample indices ``[B]`` -> W+ codes ``w0 [B,num_ws,w_dim]`` (independent of batch and rank)."""
        gen = self.backbone.generator
        dtype = _dtype_of(gen)
        if self._wplus is not None:
            return self._wplus[index.cpu()].to(self.device, dtype)
        z_dim = getattr(gen, "z_dim", gen.w_dim)
        z = torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(self.sample_seed(int(i))))
                         for i in index.cpu()]).to(self.device, dtype)
        if self._mean_latent is None and self.truncation_psi != 1.0:
            self._mean_latent = gen.mean_latent().to(self.device, dtype)
        w = gen.mapping(z, self.truncation_psi, self._mean_latent)
        return w[:, None].expand(-1, gen.num_ws, -1).contiguous()

    # ------------------------------------------------------------------ loop
    def training_step(self, batch, batch_idx):
        """Add the batch's valid samples that are not in the sums yet (padding and, after a resume,
        samples already counted are skipped), then make the no-op optimizer step."""
        index = [int(i) for i, valid in zip(batch["index"].cpu(), batch["valid"].cpu())
                 if bool(valid) and int(i) not in self._done]
        if index:
            todo = torch.tensor(index, dtype=torch.long)
            jac = self._probe()(self.sample_wplus(todo), [self.identity_seed(i) for i in index])
            self.accumulator.update(jac)
            self._done.update(index)
            self._done_here.extend(index)
        self.optimizers().step()
        return None

    def on_train_end(self) -> None:
        total = GramAccumulator(self.accumulator.groups, self.accumulator.dim, self.device)
        total.load_state(self.accumulator.reduced_state())     # sum over ranks; the live sums stay per rank
        sha = generator_sha256(self.backbone)
        config = dict(layers=self.layers, groups=self.groups, k=self.k, delta=self.delta,
                      relative_delta=self.relative_delta, use_identity=self.use_identity,
                      truncation_psi=self.truncation_psi, seed=self.seed, wplus_path=self.wplus_path,
                      identity_rows=self.identity_rows,
                      num_samples=int(total.count))
        self.basis = solve_basis(total.mean(), self.k, self.mask.cpu(), self.backbone.generator.w_dim,
                                 self.delta, self.relative_delta, sha, config)
        if self.trainer.is_global_zero:
            self.basis.save(self.output_path, overwrite=self.overwrite)
            print(f"basis written to {Path(self.output_path).resolve()}: {self.basis}; explained energy "
                  + ", ".join(f"{g} {e:.3f}" for g, e in self.basis.explained_energy.items()))
