"""NVlabs stylegan2-ada-pytorch generators: state-dict conversion and a ``.pkl`` reader that runs no code.

Layout facts (verified against both repositories' TF converters, fixture
``tests/fixtures/stylegan2_ada_nvlabs/key_map_nvlabs_to_rosinality.json``):

==========================================  ===============================================
NVlabs key                                  rosinality key (transform)
==========================================  ===============================================
``mapping.fc{i}.{weight,bias}``             ``style.{i+1}.*``
``mapping.w_avg [512]``                     checkpoint ``latent_avg`` (not a ``g_ema`` key)
``synthesis.b4.const [C,4,4]``              ``input.input`` (unsqueeze 0)
``synthesis.b4.conv1.*``                    ``conv1.*``
``synthesis.b{2^(k+3)}.conv0/conv1.*``      ``convs.{2k}`` / ``convs.{2k+1}``
``synthesis.b4.torgb.*``                    ``to_rgb1.*``; ``b{2^(k+3)}.torgb.*`` -> ``to_rgbs.{k}.*``
layer ``weight [O,I,k,k]``                  ``conv.weight [1,O,I,k,k]`` (unsqueeze, no flip)
layer ``affine.{weight,bias}``              ``conv.modulation.*``
layer ``noise_strength []``                 ``noise.weight [1]``
layer ``bias [O]``                          ``activate.bias`` (ToRGB: ``bias [1,3,1,1]``)
layer ``noise_const [R,R]``                 ``noises.noise_n [1,1,R,R]``, n = 0 (b4), 2k+1, 2k+2
``b{R}.conv0.resample_filter``              ``convs.{2k}.conv.blur.kernel`` (times 4 = up**2)
``b{R}.resample_filter`` (R > 4)            ``to_rgbs.{k}.upsample.kernel`` (times 4)
``b4.resample_filter``, ``*.conv1.resample_filter``   unused in the forward pass, dropped
==========================================  ===============================================

The ``.pkl`` files are ``pickle.dump`` of ``{'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'}``
where every network is a ``torch_utils.persistence`` object whose pickle *executes the source code
stored inside it* on load. :func:`load_nvlabs_pkl` uses a restricted unpickler instead: persistent
objects become inert records of their ``state``, tensors are rebuilt with ``torch.load(...,
weights_only=True)``, only a short allow-list of torch / numpy / collections globals resolves, and
anything else is refused with :class:`CorruptCheckpointError`. Python's :mod:`pickle` has no
"load data only" mode for these files, hence this small hand-written unpickler.
"""
from __future__ import annotations

import io
import os
import pickle
import re
from collections import OrderedDict
from typing import Any, Optional

import torch

from ipsb.backbone.stylegan2 import StyleGAN2Generator, generator_from_state_dict
from ipsb.checkpoints import (LEGACY_TORCH_HEADER, ZIP_HEADER, CorruptCheckpointError, WrongCheckpointKindError,
                              resolve_checkpoint)

_LAYER_FIELDS = {  # NVlabs SynthesisLayer field -> rosinality StyledConv field
    "weight": "conv.weight", "affine.weight": "conv.modulation.weight",
    "affine.bias": "conv.modulation.bias", "noise_strength": "noise.weight", "bias": "activate.bias",
}
_TORGB_FIELDS = {
    "weight": "conv.weight", "affine.weight": "conv.modulation.weight",
    "affine.bias": "conv.modulation.bias", "bias": "bias",
}


def _fir_to_rosinality(t: torch.Tensor) -> torch.Tensor:
    """NVlabs stores the 2x-up FIR filter with sum 1 (gain applied in upfirdn2d); rosinality x up**2."""
    return t * 4


def nvlabs_key_to_rosinality(key: str) -> Optional[str]:
    """The rosinality ``g_ema`` key for an NVlabs generator key; None for entries with no counterpart
    (``mapping.w_avg`` -> ``latent_avg``, unused ``resample_filter``s). ValueError for unknown keys."""
    m = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", key)
    if m:
        return f"style.{int(m.group(1)) + 1}.{m.group(2)}"
    if key == "mapping.w_avg":
        return None
    if key == "synthesis.b4.const":
        return "input.input"
    m = re.fullmatch(r"synthesis\.b(\d+)\.(.+)", key)
    if m:
        res, rest = int(m.group(1)), m.group(2)
        k = res.bit_length() - 4  # res = 2**(k+3)
        if rest == "resample_filter":
            return None if res == 4 else f"to_rgbs.{k}.upsample.kernel"
        lm = re.fullmatch(r"(conv0|conv1|torgb)\.(.+)", rest)
        if lm:
            layer, field = lm.groups()
            if layer == "torgb":
                if field in _TORGB_FIELDS:
                    return f"{'to_rgb1' if res == 4 else f'to_rgbs.{k}'}.{_TORGB_FIELDS[field]}"
            else:
                if res == 4 and layer == "conv1":
                    prefix, n = "conv1", 0
                elif res > 4:
                    idx = 2 * k + (0 if layer == "conv0" else 1)
                    prefix, n = f"convs.{idx}", idx + 1
                else:
                    prefix = None
                if prefix is not None:
                    if field in _LAYER_FIELDS:
                        return f"{prefix}.{_LAYER_FIELDS[field]}"
                    if field == "noise_const":
                        return f"noises.noise_{n}"
                    if field == "resample_filter":
                        return f"{prefix}.conv.blur.kernel" if layer == "conv0" else None
    raise ValueError(f"unknown NVlabs StyleGAN2 generator key {key!r} (expected mapping.fc*, "
                     f"mapping.w_avg or synthesis.b<res>.{{const,conv0,conv1,torgb,resample_filter}}.*)")


def _to_rosinality_tensor(nv_key: str, ros_key: str, t: torch.Tensor) -> torch.Tensor:
    if ros_key == "input.input" or ros_key.endswith("conv.weight"):
        return t.unsqueeze(0)
    if ros_key.endswith("noise.weight"):
        return t.reshape(1)
    if ros_key.startswith("noises."):
        return t.reshape(1, 1, *t.shape)
    if ros_key.startswith(("to_rgb1.bias", "to_rgbs.")) and ros_key.endswith(".bias") \
            and "modulation" not in ros_key:
        return t.reshape(1, -1, 1, 1)
    if ros_key.endswith(".kernel"):
        return _fir_to_rosinality(t)
    return t


def nvlabs_to_rosinality(state: dict) -> tuple["OrderedDict[str, torch.Tensor]", Optional[torch.Tensor]]:
    """NVlabs ``G.state_dict()`` -> (rosinality ``g_ema`` state dict, ``latent_avg [w_dim]`` or None).

    Raises ValueError on keys that belong to no NVlabs StyleGAN2 generator.
    """
    bad = [k for k in state if not isinstance(state[k], torch.Tensor)]
    if bad:
        raise ValueError(f"state dict entries must be tensors; not tensors: {bad[:5]}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, t in state.items():
        ros = nvlabs_key_to_rosinality(key)
        if ros is not None:
            out[ros] = _to_rosinality_tensor(key, ros, t)
    return out, state.get("mapping.w_avg")


def rosinality_to_nvlabs(state: dict, latent_avg: Optional[torch.Tensor] = None) -> "OrderedDict[str, torch.Tensor]":
    """Inverse of :func:`nvlabs_to_rosinality`, in NVlabs' state-dict order (synthesis, then mapping).

    The FIR filters NVlabs keeps but never uses are filled with the standard ``[1,3,3,1]`` filter;
    ``mapping.w_avg`` is ``latent_avg`` (zeros when None).
    """
    n_mlp = sum(1 for k in state if re.fullmatch(r"style\.\d+\.weight", k))
    n_blocks = sum(1 for k in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
    fir = torch.tensor([1.0, 3.0, 3.0, 1.0], device=state["input.input"].device)
    fir = fir[:, None] * fir[None, :] / 64
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    def layer(nv: str, ros: str, noise: int, up: bool):
        out[f"{nv}.weight"] = state[f"{ros}.conv.weight"][0]
        out[f"{nv}.noise_strength"] = state[f"{ros}.noise.weight"].reshape(())
        out[f"{nv}.bias"] = state[f"{ros}.activate.bias"]
        out[f"{nv}.resample_filter"] = state[f"{ros}.conv.blur.kernel"] / 4 if up else fir.clone()
        out[f"{nv}.noise_const"] = state[f"noises.noise_{noise}"][0, 0]
        out[f"{nv}.affine.weight"] = state[f"{ros}.conv.modulation.weight"]
        out[f"{nv}.affine.bias"] = state[f"{ros}.conv.modulation.bias"]

    def torgb(nv: str, ros: str):
        out[f"{nv}.weight"] = state[f"{ros}.conv.weight"][0]
        out[f"{nv}.bias"] = state[f"{ros}.bias"].reshape(-1)
        out[f"{nv}.affine.weight"] = state[f"{ros}.conv.modulation.weight"]
        out[f"{nv}.affine.bias"] = state[f"{ros}.conv.modulation.bias"]

    out["synthesis.b4.const"] = state["input.input"][0]
    out["synthesis.b4.resample_filter"] = fir.clone()
    layer("synthesis.b4.conv1", "conv1", 0, False)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for k in range(n_blocks):
        b = f"synthesis.b{2 ** (k + 3)}"
        out[f"{b}.resample_filter"] = state[f"to_rgbs.{k}.upsample.kernel"] / 4
        layer(f"{b}.conv0", f"convs.{2 * k}", 2 * k + 1, True)
        layer(f"{b}.conv1", f"convs.{2 * k + 1}", 2 * k + 2, False)
        torgb(f"{b}.torgb", f"to_rgbs.{k}")
    w_dim = state["style.1.weight"].shape[1]
    out["mapping.w_avg"] = (latent_avg.reshape(w_dim) if latent_avg is not None
                            else torch.zeros(w_dim, device=state["input.input"].device))
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = state[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = state[f"style.{i + 1}.bias"]
    return out


def from_nvlabs_state_dict(state: dict, conv_clamp: Optional[float] = None,
                           what: str = "NVlabs state dict") -> StyleGAN2Generator:
    """NVlabs generator ``state_dict()`` -> :class:`StyleGAN2Generator` (strict), ``latent_avg = w_avg``.

    ``conv_clamp``: the network's NVlabs ``conv_clamp`` (256 for ``train.py`` networks, None for
    TF-converted ones such as ``ffhq.pkl``); it only matters for activations beyond +-256.
    """
    ros, w_avg = nvlabs_to_rosinality(state)
    return generator_from_state_dict(ros, w_avg, what=what, conv_clamp=conv_clamp)


# -- restricted .pkl reader ---------------------------------------------------------------------

class PersistentRecord:
    """Inert stand-in for an NVlabs ``persistent_class`` object: its class name and pickled state."""

    def __init__(self, meta: Any):
        if not isinstance(meta, dict) or "state" not in meta:
            raise CorruptCheckpointError("persistent object without a 'state' dict in the pickle")
        self.class_name = meta.get("class_name")
        self.state = meta["state"]

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})


class _EasyDict(dict):
    """Data-only replacement for ``dnnlib.util.EasyDict``."""


def _load_storage_from_bytes(b: bytes):
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _numpy_globals() -> dict:
    import numpy as np
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    out = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = multiarray.scalar
        out[(mod, "_reconstruct")] = multiarray._reconstruct
    for name in ("float64", "float32", "int64", "int32", "bool_"):
        out[("numpy", name)] = getattr(np, name)
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only data-building globals and never imports or executes pickle code."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source
        self.allowed = {
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
            ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
            ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
            ("collections", "OrderedDict"): OrderedDict,
            ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
            ("dnnlib.util", "EasyDict"): _EasyDict,
            ("dnnlib", "EasyDict"): _EasyDict,
            **_numpy_globals(),
        }

    def find_class(self, module: str, name: str):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("dnnlib.tflib"):
            raise CorruptCheckpointError(
                f"'{self.source}' is a TensorFlow StyleGAN pickle ({module}.{name}); convert it to the "
                f"PyTorch format first (stylegan2-ada-pytorch legacy.py) or use a rosinality .pt")
        raise CorruptCheckpointError(
            f"refusing to load '{self.source}': the pickle references {module}.{name}, which is not "
            f"part of an NVlabs network pickle's data (only torch tensors, numpy scalars, dicts and "
            f"torch_utils.persistence objects are accepted; no code from the file is run)")


def flatten_persistent(obj: PersistentRecord, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """A persistent module record -> its ``state_dict()`` (parameters, persistent buffers, children)."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    state = obj.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, t in (state.get("_parameters") or {}).items():
        if t is not None:
            out[prefix + name] = t.detach()
    for name, t in (state.get("_buffers") or {}).items():
        if t is not None and name not in skip:
            out[prefix + name] = t.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CorruptCheckpointError(f"sub-module {prefix + name} is {type(child).__name__}, "
                                         f"not an NVlabs persistent module")
        out.update(flatten_persistent(child, f"{prefix}{name}."))
    return out


def read_nvlabs_pkl(path: str | os.PathLike, key: str = "G_ema") -> tuple["OrderedDict[str, torch.Tensor]", dict]:
    """Restricted read of an NVlabs network pickle -> (``state_dict`` of ``data[key]``, its init kwargs)."""
    path = resolve_checkpoint(path)
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_TORCH_HEADER))
    torch_file = ("a PyTorch checkpoint (zip)" if head.startswith(ZIP_HEADER) else
                  "a PyTorch checkpoint (legacy format)" if head.startswith(LEGACY_TORCH_HEADER) else None)
    if not head:
        raise CorruptCheckpointError(f"could not read an NVlabs network pickle from '{path}': it is empty (0 bytes); "
                                     f"download it again (checkpoints/README.md)")
    if torch_file:
        raise WrongCheckpointKindError(f"'{path}' is {torch_file}, not an NVlabs network pickle (ffhq.pkl); rosinality "
                                       f".pt generators load with ipsb.backbone.stylegan2.load_rosinality")
    try:
        with open(path, "rb") as f:
            data = RestrictedUnpickler(f, str(path)).load()
    except CorruptCheckpointError:
        raise
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        raise CorruptCheckpointError(
            f"could not read an NVlabs network pickle from '{path}': it is truncated or not a pickle "
            f"({type(e).__name__}: {first}); download it again (checkpoints/README.md)") from e
    if not isinstance(data, dict) or key not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise WrongCheckpointKindError(
            f"'{path}' is not an NVlabs network pickle: expected a dict with '{key}' "
            f"(keys G, D, G_ema, ...), found {found}")
    net = data[key]
    if not isinstance(net, PersistentRecord):
        raise CorruptCheckpointError(f"'{path}'[{key!r}] is {type(net).__name__}, not an NVlabs network")
    return flatten_persistent(net), net.init_kwargs


def load_nvlabs_pkl(path_or_name: str | os.PathLike = "ffhq.pkl", use_conv_clamp: bool = True) -> StyleGAN2Generator:
    """NVlabs stylegan2-ada-pytorch ``.pkl`` -> :class:`StyleGAN2Generator` from ``G_ema`` (no code run).

    Refuses conditional (``c_dim > 0``) and non-``skip`` generators. ``use_conv_clamp`` keeps the
    pickle's ``conv_clamp`` (NVlabs applies it in float32 inference too).
    """
    state, kwargs = read_nvlabs_pkl(path_or_name)
    syn = dict(kwargs.get("synthesis_kwargs") or {})
    if kwargs.get("c_dim", 0):
        raise CorruptCheckpointError(f"'{path_or_name}' holds a conditional generator (c_dim="
                                     f"{kwargs['c_dim']}); only unconditional StyleGAN2 is supported")
    if syn.get("architecture", "skip") != "skip" or kwargs.get("img_channels", 3) != 3:
        raise CorruptCheckpointError(f"'{path_or_name}': expected a 3-channel 'skip' StyleGAN2 generator, "
                                     f"got {syn.get('architecture')} / {kwargs.get('img_channels')} channels")
    clamp = syn.get("conv_clamp") if use_conv_clamp else None
    try:
        g = from_nvlabs_state_dict(state, conv_clamp=clamp, what=f"'{path_or_name}' G_ema")
    except ValueError as e:
        raise CorruptCheckpointError(f"'{path_or_name}' G_ema is not a StyleGAN2 generator: {e}") from e
    g.checkpoint_path = str(resolve_checkpoint(path_or_name))   # provenance: FaceBackbone.file_hashes()
    return g
