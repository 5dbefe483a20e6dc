"""Perceptual: the LPIPS distance (Zhang et al. 2018) as a frozen backbone component.

Wraps ``lpips.LPIPS`` but never lets it load or download anything itself: its calibrated linear
heads, which ship inside the ``lpips`` package, are read from :func:`linear_heads_path` (missing or
corrupt file -> a clear error), and the ImageNet backbone (AlexNet / VGG16 / SqueezeNet from
torchvision) is built randomly (``pnet_rand=True`` inside lpips) and its weights are then loaded
from a file found in
this order: ``backbone_weights`` (a path or a name resolved in ``checkpoints/``), the checkpoint
folders (``checkpoints/<torchvision file name>``, a registry entry), then the torch hub cache
(``torch.hub.get_dir()/checkpoints/<that name>``, where torchvision keeps files it downloaded).
None found -> :class:`MissingCheckpointError` naming the file. ``pnet_rand=True`` keeps the random
backbone (toy world and tests; seed torch first for determinism).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ipsb.checkpoints import (CorruptCheckpointError, MissingCheckpointError, WrongCheckpointKindError,
                              describe_contents, foreign_kind, load_torch_file, resolve_checkpoint)

#: torchvision's file names for the LPIPS backbones (as stored in the torch hub cache).
TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                     "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def find_backbone_weights(net: str, backbone_weights: Optional[str] = None) -> Path:
    """The torchvision ImageNet weights file for ``net``, or MissingCheckpointError naming it."""
    if backbone_weights is not None:
        return resolve_checkpoint(backbone_weights)
    name = TORCHVISION_FILES[net]
    try:
        return resolve_checkpoint(name)
    except MissingCheckpointError as e:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / name
        if hub.is_file():
            return hub
        raise MissingCheckpointError(
            f"LPIPS needs torchvision's ImageNet {net} weights '{name}' (not downloaded by ipsb): put it in "
            f"checkpoints/ (or torchvision's cache {hub.parent}), or pass backbone_weights=<path>. {e}") from e


def linear_heads_path(net: str) -> Path:
    """The calibrated linear heads ``weights/v0.1/<net>.pth`` shipped inside the ``lpips`` package."""
    import lpips

    path = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise MissingCheckpointError(f"LPIPS linear heads '{path}' not found; they ship with the lpips wheel "
                                     f"(reinstall it: pip install --force-reinstall lpips)")
    return path


class Perceptual(nn.Module):
    """LPIPS distance: ``forward(a, b)`` with images ``[B,3,H,W]`` in [-1,1] -> ``[B]`` (>= 0, 0 iff equal)."""

    def __init__(self, net: str = "alex", pnet_rand: bool = False, backbone_weights: Optional[str] = None):
        super().__init__()
        if net not in TORCHVISION_FILES:
            raise ValueError(f"LPIPS net must be one of {sorted(TORCHVISION_FILES)}, got {net!r}")
        import lpips

        self.net_name = net
        self.checkpoint_path = None
        if not pnet_rand:            # the file first: a bad one fails before the network is built
            path = find_backbone_weights(net, backbone_weights)
            state = load_torch_file(path, f"torchvision {net} ImageNet weights")
            if not isinstance(state, dict) or foreign_kind(state) is not None:
                raise WrongCheckpointKindError(f"'{path}' is {describe_contents(state)}, not torchvision's {net} "
                                               f"ImageNet weights ({TORCHVISION_FILES[net]})")
        with warnings.catch_warnings():      # torchvision's "pretrained is deprecated" noise
            warnings.simplefilter("ignore", UserWarning)
            self.lpips = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        self.heads_path = linear_heads_path(net)
        heads = load_torch_file(self.heads_path, f"LPIPS {net} linear heads")
        if not isinstance(heads, dict) or not heads or not all(k.startswith("lin") for k in heads):
            raise CorruptCheckpointError(f"'{self.heads_path}' does not hold LPIPS linear heads (lin0..linN)")
        missing, unexpected = self.lpips.load_state_dict(heads, strict=False)
        missing = [k for k in missing if re.match(r"lin\d", k)]   # ``lins.i`` aliases ``lin<i>``; the backbone comes below
        if unexpected or missing:
            raise CorruptCheckpointError(f"'{self.heads_path}' does not match LPIPS {net}: missing {missing}, "
                                         f"unexpected {unexpected}")
        if not pnet_rand:
            target = self.lpips.net.state_dict()
            mapped = {}
            for key in target:                     # "slice2.3.weight" <- "features.3.weight"
                _, idx, param = key.split(".")
                src = f"features.{idx}.{param}"
                if src not in state:
                    raise WrongCheckpointKindError(f"'{path}' is {describe_contents(state)}, not torchvision's {net} "
                                                   f"ImageNet weights ({TORCHVISION_FILES[net]}): no {src}")
                mapped[key] = state[src]
            self.lpips.net.load_state_dict(mapped, strict=True)
            self.checkpoint_path = str(path)
        self.lpips.eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(f"expected two image batches [B,3,H,W] of equal shape, got {list(a.shape)} and {list(b.shape)}")
        return self.lpips(a, b, normalize=False).flatten()
