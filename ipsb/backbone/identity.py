"""Identity networks behind one interface: aligned face ``[B,3,H,W]`` in [-1,1] -> unit-norm ``[B,D]``.

* IR-SE50 (``model_ir_se50.pth``, pSp/e4e ID loss, D=512): :mod:`ipsb.backbone.identity_irse`.
* iResNet-50/100 (insightface arcface_torch ``backbone.pth``, D=512): :mod:`ipsb.backbone.identity_iresnet`.
* CosFace sphere20 (``net_sphere20_data_vggface2_acc_9955.pth``, FF++ ID retrieval, 112x96 input,
  mirror-concatenated D=1024): :mod:`ipsb.backbone.identity_sphere`.

Each network crops/pools an FFHQ-aligned square to its own input (``crop='ffhq'``) or takes its
native aligned crop as is (``crop='none'``); see :mod:`ipsb.backbone.identity_crop`.
:func:`load_identity_encoder` picks a network by name for configs.
"""
from __future__ import annotations

from ipsb.backbone.identity_crop import PSP_BOX_256, SPHERE_BOX_256, FaceCrop
from ipsb.backbone.identity_iresnet import IResNet, iresnet, load_iresnet
from ipsb.backbone.identity_irse import IRSE, ir_se50, load_ir_se50
from ipsb.backbone.identity_sphere import SphereFace, load_sphere20, sphere20
from ipsb.backbone.interfaces import IdentityEncoder
from ipsb.backbone.state_loading import CheckpointSource

#: name -> (loader, default checkpoint file).
IDENTITY_NETWORKS = {
    "ir_se50": (load_ir_se50, "model_ir_se50.pth"),
    "iresnet": (load_iresnet, "backbone.pth"),
    "sphere20": (load_sphere20, "net_sphere20_data_vggface2_acc_9955.pth"),
}


def load_identity_encoder(name: str = "ir_se50", checkpoint: CheckpointSource | None = None,
                          crop: str = "ffhq") -> IdentityEncoder:
    """Frozen identity network ``name`` (``ir_se50``, ``iresnet``, ``sphere20``) with its checkpoint."""
    if name not in IDENTITY_NETWORKS:
        raise ValueError(f"unknown identity network {name!r}; choose one of {sorted(IDENTITY_NETWORKS)}")
    loader, default = IDENTITY_NETWORKS[name]
    return loader(default if checkpoint is None else checkpoint, crop=crop)


__all__ = ["FaceCrop", "PSP_BOX_256", "SPHERE_BOX_256", "IRSE", "ir_se50", "load_ir_se50", "IResNet",
           "iresnet", "load_iresnet", "SphereFace", "sphere20", "load_sphere20", "IDENTITY_NETWORKS",
           "load_identity_encoder"]
