"""The one builder of objects from config: allowlist before import, types before calls, clear errors."""
import functools
import subprocess
import sys
from typing import Optional

import pytest
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from ipsb.backbone.interfaces import Generator, IdentityEncoder
from ipsb.config_objects import (ConfigBuildError, build, build_components, callable_spec, resolve_class,
                                 validate)


def _payloads(marker):
    cmd = f"touch {marker}"
    return [{"class_path": "os.system", "init_args": {"command": cmd}},
            {"class_path": "posix.system", "init_args": {"command": cmd}},
            {"class_path": "subprocess.getoutput", "init_args": {"cmd": cmd}},
            {"class_path": "builtins.exec", "init_args": {"source": f"open({str(marker)!r}, 'w')"}},
            {"class_path": "ipsb.config_objects.os.system", "init_args": {"command": cmd}},   # re-export
            "os.system"]


@pytest.mark.parametrize("expected", [Generator, torch.nn.Module, Optional[IdentityEncoder], OptimizerCallable])
def test_code_outside_the_allowlist_is_refused_and_never_runs(tmp_path, expected):
    marker = tmp_path / "MARKER"
    for payload in _payloads(marker):
        with pytest.raises(ConfigBuildError, match="outside the packages|not a subclass|does not correspond|cannot import"):
            build(payload, expected, "component")
        with pytest.raises(ConfigBuildError):
            validate(payload, expected, "component")
    assert not marker.exists()


def test_the_allowlist_is_checked_before_the_module_is_imported():
    # a fresh interpreter: importing `antigravity` would open a web browser, `this` prints the Zen
    code = ("import sys, ipsb\n"
            "from ipsb.config_objects import build, ConfigBuildError\n"
            "from torch import nn\n"
            "for path in ('antigravity.Thing', 'this.Thing'):\n"
            "    try:\n"
            "        build({'class_path': path}, nn.Module)\n"
            "    except ConfigBuildError as e:\n"
            "        assert 'outside the packages' in str(e), e\n"
            "assert 'antigravity' not in sys.modules and 'this' not in sys.modules\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_classes_and_factory_functions_are_type_checked_before_the_call(monkeypatch):
    called = []
    import ipsb.backbone.encoder as encoder

    monkeypatch.setattr(encoder, "load_e4e", lambda *a, **k: called.append(1))
    # e4e's loader returns an encoder, not a Generator: refused by its declared return type, uncalled
    with pytest.raises(ConfigBuildError, match="Generator"):
        build({"class_path": "ipsb.backbone.encoder.load_e4e", "init_args": {"path_or_name": "x.pt"}}, Generator)
    assert called == []
    # an allowlisted class of the wrong kind
    with pytest.raises(ConfigBuildError, match="Generator"):
        build({"class_path": "ipsb.backbone.toy.networks.ToyRegressor"}, Generator)
    # a right one is built, with its arguments type-checked
    gen = build({"class_path": "ipsb.backbone.toy.generator.ToyGenerator", "init_args": {"seed": 3}}, Generator)
    assert type(gen).__name__ == "ToyGenerator"
    with pytest.raises(ConfigBuildError, match="seed"):
        build({"class_path": "ipsb.backbone.toy.generator.ToyGenerator", "init_args": {"seed": "three"}}, Generator)
    with pytest.raises(ConfigBuildError, match="cannot import"):
        build({"class_path": "ipsb.backbone.nothing.Here"}, Generator)


def test_a_factory_function_with_the_right_return_type_is_accepted():
    from ipsb.backbone.stylegan2 import StyleGAN2Generator

    spec = {"class_path": "ipsb.backbone.stylegan2.load_rosinality", "init_args": {"path_or_name": "gen.pt"}}
    assert validate(spec, Generator)["class_path"] == "ipsb.backbone.stylegan2.load_rosinality"
    assert resolve_class("ipsb.backbone.stylegan2.StyleGAN2Generator", Generator) is StyleGAN2Generator


def test_build_components_names_every_missing_file(tmp_path, monkeypatch):
    from ipsb.backbone.bundle import FaceBackbone
    from ipsb.checkpoints import MissingCheckpointError

    monkeypatch.setenv("IPSB_CHECKPOINTS", str(tmp_path))
    specs = {"generator": {"class_path": "ipsb.backbone.stylegan2.load_rosinality",
                           "init_args": {"path_or_name": "nope_gen.pt"}},
             "identity": {"class_path": "ipsb.backbone.identity_irse.load_ir_se50",
                          "init_args": {"checkpoint": "nope_id.pth"}},
             "pose": None}
    with pytest.raises(MissingCheckpointError) as err:
        build_components(specs, FaceBackbone, "backbone")
    assert "nope_gen.pt" in str(err.value) and "nope_id.pth" in str(err.value)
    assert build_components(specs, FaceBackbone, "backbone", names=()) == {}       # nothing asked: nothing built
    with pytest.raises(ConfigBuildError, match="unknown backbone entries"):
        build_components({"genertor": {}}, FaceBackbone, "backbone")


def test_optimizer_values_become_storable_specs_and_build_through_the_allowlist():
    spec = callable_spec(functools.partial(torch.optim.AdamW, lr=0.1), OptimizerCallable, "optimizer")
    assert spec["class_path"] == "torch.optim.AdamW" and spec["init_args"]["lr"] == 0.1
    assert callable_spec(torch.optim.SGD, OptimizerCallable, "optimizer")["class_path"] == "torch.optim.SGD"
    assert callable_spec(None, Optional[OptimizerCallable], "optimizer") is None
    opt = build(spec, OptimizerCallable)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 0.1
    sched = callable_spec({"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 3}},
                          LRSchedulerCallable, "lr_scheduler")
    assert build(sched, LRSchedulerCallable)(opt).step_size == 3
    with pytest.raises(ConfigBuildError, match="storable|class"):
        callable_spec(lambda params: torch.optim.SGD(params, lr=1), OptimizerCallable, "optimizer")
    with pytest.raises(ConfigBuildError, match="outside the packages"):
        callable_spec({"class_path": "os.system", "init_args": {"command": "true"}}, OptimizerCallable, "optimizer")
