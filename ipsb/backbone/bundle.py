"""FaceBackbone: the one frozen bundle of pretrained networks every stage shares.

Components (each an ``nn.Module`` built from config by ``class_path``/``init_args``): ``generator``
(:class:`Generator`), ``face_model`` (:class:`FaceModel`), ``renderer`` (:class:`Renderer`),
``regressor`` (:class:`CoeffRegressor`), ``identity`` (:class:`IdentityEncoder`), and optional
``perceptual`` (LPIPS-like ``(a, b) -> [B]``), ``encoder`` (image -> W+), ``masker``
(:class:`FaceMasker`), ``pose`` (:class:`PoseEstimator`).

Frozen for good: every parameter has ``requires_grad=False`` and :meth:`train` always keeps the
bundle in eval mode, so a LightningModule's ``.train()`` cannot switch on dropout/normalisation
updates. It moves with its parent module (``.to(device)``) like any sub-module.

Built from config: :meth:`from_config` checks the whole config (allowlisted class paths, argument
names and types; :mod:`ipsb.config_objects`), then builds the components -- all of them, or only
those a stage declares it uses (the rest stay configured but unbuilt, named in :attr:`unbuilt`) --
and keeps the full config in :attr:`config` so a stage checkpoint can rebuild the bundle.

Provenance: a component that loaded files records them in ``checkpoint_path`` (a path or a list of
paths); :meth:`checkpoint_files` collects them and :meth:`file_hashes` gives their sha256, which
stage checkpoints store instead of the backbone's tensors.
"""
from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ipsb.backbone.interfaces import (CoeffRegressor, FaceMasker, FaceModel, Generator, IdentityEncoder,
                                      PoseEstimator, RenderOutput, Renderer, freeze)
from ipsb.checkpoints import sha256_file
from ipsb.config_objects import ConfigBuildError, build_components, read_mapping, resolve_class, validate

COMPONENTS = ("generator", "face_model", "renderer", "regressor", "identity", "perceptual", "encoder",
              "masker", "pose")
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def load_config(config: Union[str, os.PathLike, Mapping]) -> dict:
    """A backbone config (dict or YAML path) -> plain ``{"class_path": ..., "init_args": {...}}``.

    Accepts the full form, a dict holding only the init args (components), or a path to a YAML file
    holding either form. The class must be FaceBackbone or a subclass; unknown component names are
    refused here, naming them. Nothing is built.
    """
    config = read_mapping(config, "backbone config")
    if "class_path" not in config:
        config = {"class_path": f"{FaceBackbone.__module__}.FaceBackbone", "init_args": config}
    cls = resolve_class(config["class_path"], FaceBackbone, "backbone class_path")
    config["init_args"] = dict(config.get("init_args") or {})
    unknown = set(config["init_args"]) - set(inspect.signature(cls).parameters)
    if unknown:
        raise ConfigBuildError(f"unknown backbone components {sorted(unknown)}; expected some of {list(COMPONENTS)}")
    return config


def _recorded_files(comp: Optional[nn.Module]) -> list[str]:
    """Files a component says it loaded: ``checkpoint_path`` (path or list), else the ``checkpoint``
    or ``path`` attribute when it names an existing file."""
    if comp is None:
        return []
    for attr in ("checkpoint_path", "checkpoint_paths", "checkpoint", "path"):
        value = getattr(comp, attr, None)
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value) if isinstance(value, (list, tuple)) else []
        files = [str(v) for v in values if isinstance(v, (str, os.PathLike)) and Path(v).is_file()]
        if files or attr == "checkpoint_path":
            return files
    return []


class FaceBackbone(nn.Module):
    """The frozen shared networks (see module docstring) plus the helpers the stages need."""

    def __init__(self, generator: Optional[Generator] = None, face_model: Optional[FaceModel] = None,
                 renderer: Optional[Renderer] = None, regressor: Optional[CoeffRegressor] = None,
                 identity: Optional[IdentityEncoder] = None, perceptual: Optional[nn.Module] = None,
                 encoder: Optional[nn.Module] = None, masker: Optional[FaceMasker] = None,
                 pose: Optional[PoseEstimator] = None):
        super().__init__()
        if generator is None:
            raise ValueError("a FaceBackbone needs a generator")
        for name, value in zip(COMPONENTS, (generator, face_model, renderer, regressor, identity, perceptual,
                                             encoder, masker, pose)):
            if value is not None and not isinstance(value, nn.Module):
                raise ValueError(f"backbone component {name!r} must be an nn.Module, got {type(value).__name__}")
            setattr(self, name, value)
        #: the full config this bundle was built from (set by :meth:`from_config`), else None
        self.config: Optional[dict] = None
        #: components the config names but that were not built (see ``from_config(components=...)``)
        self.unbuilt: tuple[str, ...] = ()
        freeze(self)

    @classmethod
    def from_config(cls, config: Union[str, os.PathLike, Mapping],
                    components: Optional[Sequence[str]] = None) -> "FaceBackbone":
        """Build from a config dict / YAML path (see :func:`load_config`); keeps it in ``.config``.

        ``components``: build only these (e.g. the ones a stage uses); the others stay in the config
        (and so in a stage checkpoint's record) but are not built and need not have their files.
        Every missing checkpoint file of the built components is named in one MissingCheckpointError.
        """
        source = config if isinstance(config, (str, os.PathLike)) else None
        try:
            config = load_config(config)
            target = resolve_class(config["class_path"], FaceBackbone, "backbone class_path")
            validate(config, FaceBackbone, "backbone config")          # every entry, built or not
            specs = config["init_args"]
            built = build_components(specs, target, "backbone", components)
        except ConfigBuildError as e:
            if source is None:
                raise
            raise ConfigBuildError(f"backbone config '{source}': {e}") from e    # which file said it
        backbone = target(**built)
        backbone.config = copy.deepcopy(config)
        backbone.unbuilt = tuple(n for n, spec in specs.items() if spec is not None and getattr(backbone, n) is None)
        return backbone

    # --------------------------------------------------------------- frozen-ness
    def train(self, mode: bool = True) -> "FaceBackbone":
        """Always eval: the backbone never trains (``mode`` is ignored)."""
        return super().train(False)

    # --------------------------------------------------------------- provenance
    def checkpoint_files(self, components: Optional[Sequence[str]] = None) -> dict[str, str]:
        """``{component: path}`` of every file a component loaded (``name.1`` ... for several);
        ``components``: only those components' files."""
        out = {}
        for name in COMPONENTS if components is None else [c for c in COMPONENTS if c in components]:
            paths = _recorded_files(getattr(self, name))
            if not paths:
                continue
            for i, p in enumerate(paths):
                out[name if i == 0 else f"{name}.{i}"] = str(p)
        return out

    def file_hashes(self, components: Optional[Sequence[str]] = None) -> dict[str, str]:
        """``{file name: sha256}`` of every file in :meth:`checkpoint_files` (cached by size/mtime)."""
        out = {}
        for path in self.checkpoint_files(components).values():
            st = os.stat(path)
            key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
            if key not in _HASH_CACHE:
                _HASH_CACHE[key] = sha256_file(path)
            out[Path(path).name] = _HASH_CACHE[key]
        return out

    def check_hashes(self, expected: Mapping[str, str]) -> None:
        """Raise ValueError naming each file whose sha256 differs from ``expected`` (or is missing)."""
        have = self.file_hashes()
        bad = []
        for name, digest in expected.items():
            if name not in have:
                bad.append(f"'{name}' (expected sha256 {digest[:12]}..., but this backbone did not load it)")
            elif have[name] != digest:
                bad.append(f"'{name}' (expected sha256 {digest[:12]}..., found {have[name][:12]}...)")
        if bad:
            files = self.checkpoint_files()
            raise ValueError("backbone checkpoint files differ from those the stage was trained with: "
                             + "; ".join(bad) + f". Files loaded now: {files}")

    # --------------------------------------------------------------- helpers
    def _need(self, name: str) -> nn.Module:
        comp = getattr(self, name)
        if comp is None:
            if name in self.unbuilt:
                raise ValueError(f"this FaceBackbone was built without its {name!r} component (the stage that "
                                 f"built it does not use it)")
            raise ValueError(f"this FaceBackbone has no {name!r} component; add it to the backbone config")
        return comp

    def synthesize(self, wplus: torch.Tensor, **kwargs):
        """W+ ``[B,num_ws,w_dim]`` -> image ``[B,3,R,R]`` in [-1,1] (kwargs as ``Generator.synthesis``)."""
        return self.generator.synthesis(wplus, **kwargs)

    def sample_wplus(self, n: int, seed: int = 0, truncation_psi: float = 1.0) -> torch.Tensor:
        """``n`` seeded W+ codes ``[n,num_ws,w_dim]`` on the generator's device (one mapped w repeated
        over rows; :func:`ipsb.data.latents.sample_wplus`)."""
        from ipsb.data.latents import sample_wplus

        g = self.generator
        dev = next((t.device for t in [*g.buffers(), *g.parameters()]), torch.device("cpu"))
        return sample_wplus(g, n, seed, truncation_psi, dtype=None).to(dev)

    def coeffs(self, image: torch.Tensor) -> torch.Tensor:
        """image ``[B,3,H,W]`` in [-1,1] -> 3DMM coefficients ``[B,C]``."""
        return self.regressor(image)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """image ``[B,3,H,W]`` in [-1,1] -> L2-normalised identity embedding ``[B,D]``."""
        return self.identity(image)

    def render_coeffs(self, coeffs: torch.Tensor) -> RenderOutput:
        """coeffs ``[B,C]`` -> :class:`RenderOutput` (image/mask in [0,1]) through face model + renderer."""
        geom = self.face_model(coeffs)
        return self.renderer(geom.vertices, self.face_model.faces, geom.colors)

    def face_mask(self, image: torch.Tensor) -> torch.Tensor:
        """image ``[B,3,H,W]`` in [-1,1] -> soft face mask ``[B,1,H,W]`` in [0,1] (needs ``masker``)."""
        return self._need("masker")(image)

    def lpips(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Perceptual distance ``[B]`` of two image batches in [-1,1] (needs ``perceptual``)."""
        return self._need("perceptual")(a, b)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image -> W+ ``[B,num_ws,w_dim]`` (needs ``encoder``; e4e's ``forward`` gives offsets from
        ``latent_avg``, so an encoder's ``encode`` is preferred when it has one)."""
        encoder = self._need("encoder")
        return encoder.encode(image) if hasattr(encoder, "encode") else encoder(image)

    def head_pose(self, image: torch.Tensor) -> torch.Tensor:
        """image -> (yaw, pitch, roll) degrees ``[B,3]`` (needs ``pose``)."""
        return self._need("pose")(image)
