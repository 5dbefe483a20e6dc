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
