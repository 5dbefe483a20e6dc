"""Shared helpers of the harness tests: toy metric networks and a quiet CPU Trainer."""
from lightning.pytorch import Trainer

TOY_NETWORKS = {
    "identity": {"class_path": "ipsb.backbone.toy.networks.ToyIdentity", "init_args": {"weights": "default"}},
    "regressor": {"class_path": "ipsb.backbone.toy.networks.ToyRegressor", "init_args": {"weights": "default"}},
    "pose": {"class_path": "ipsb.eval.adapters.RegressorAnglePose",
             "init_args": {"regressor": {"class_path": "ipsb.backbone.toy.networks.ToyRegressor"}}},
}


def toy_networks(fid: bool = False) -> dict:
    spec = dict(TOY_NETWORKS)
    if fid:
        spec["fid"] = {"class_path": "ipsb.eval.adapters.CoeffFeatures",
                       "init_args": {"regressor": {"class_path": "ipsb.backbone.toy.networks.ToyRegressor"}}}
    return spec


def quiet_trainer(**kw) -> Trainer:
    return Trainer(accelerator="cpu", devices=kw.pop("devices", 1), logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, **kw)


import torch  # noqa: E402
from torch import nn  # noqa: E402

from ipsb.backbone.interfaces import PoseEstimator  # noqa: E402
from ipsb.backbone.pose import bins_to_degrees  # noqa: E402
from ipsb.config_objects import allow_packages  # noqa: E402

allow_packages(__name__)   # configs in the tests name this module's classes (TinyBinPose)


class TinyBinPose(PoseEstimator):
    """A seeded stand-in with HopeNet's interface: ``logits(image) -> [B,3,66]``, forward -> degrees."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.register_buffer("w", torch.randn(3 * 4 * 4, 3 * 66, generator=g) * 0.5)

    def logits(self, image):
        x = nn.functional.adaptive_avg_pool2d(image, 4).flatten(1)
        return (x @ self.w).view(-1, 3, 66)

    def forward(self, image):
        return bins_to_degrees(self.logits(image))
