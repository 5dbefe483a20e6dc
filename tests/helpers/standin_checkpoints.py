"""Stand-in official checkpoints: every file of ``checkpoints/README.md`` in its official format and key
layout, with deterministic weights, in one folder that a test uses as ``$IPSB_CHECKPOINTS``.

Where the loader infers the architecture from the file, the stand-in is small: the rosinality
generator (64 px, narrow channels, ``w_dim`` 64 by default) and the e4e encoder (its W+ heads follow
the generator: ``stylegan_size`` and ``w_dim`` come from the file; the IR-SE50 body is fixed). The
other networks have one fixed architecture, so they are written at full size from the key/shape
manifests in ``tests/fixtures`` (the official layouts, independent of ipsb's own modules):
Deep3D ``net_recon`` (ResNet-50), IR-SE50, CosFace sphere20 (112x112, ReliableSwap's layout of the
official file; the 112x96 variant is written beside it), HopeNet and BiSeNet. The BFM is the
synthetic ``tests/fixtures/deep3d/mini_bfm.mat`` (official key names, 300 vertices);
``similarity_Lm3D_all.mat`` holds the synthetic 68-point template of ``parity_preprocess.pt``.
LPIPS reads two files: torchvision's AlexNet ImageNet weights (written here with only the
``features.*`` trunk LPIPS loads; the official file also holds ``classifier.*``, 230 MB that no
loader reads) and lpips' own linear heads, which ship inside the installed ``lpips`` package and
are used as they are.

Weights follow ``det_weights`` (policy ``unit`` and built-in FIR kernels for the generator, as real
StyleGAN checkpoints store N(0,1) weights; ``fan_in`` elsewhere). HopeNet's snapshot predates
BatchNorm's ``num_batches_tracked``, so its stand-in omits them and is a legacy (non-zip) pickle, as
the 2017 file is; IR-SE50's omits them too.

About 190 M parameters, ~750 MB on disk; writing them takes a few seconds, so the pytest fixture
:func:`standin_checkpoints` writes them once per test session.

Besides the files, :func:`write_standin_checkpoints` writes two configs next to them:

* ``backbone.yaml``: ``lightning_configs/backbone/ffhq1024.yaml`` with every file name replaced by
  the absolute path of its stand-in (same components, same loader ``class_path``);
* ``metric_networks.yaml``: the ``networks`` mapping of ``lightning_configs/eval/ffpp.yaml``,
  rewritten the same way (what ``MetricNetworks.from_config`` reads; files that a metric preset
  names in code resolve through ``$IPSB_CHECKPOINTS``, so set it to the folder).
"""
from __future__ import annotations

import math
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml

from helpers.det_weights import det_state_dict
from helpers.manifest_state import read_manifest, state_from_manifest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SHIPPED_BACKBONE = REPO / "lightning_configs" / "backbone" / "ffhq1024.yaml"
SHIPPED_FFPP = REPO / "lightning_configs" / "eval" / "ffpp.yaml"

GENERATOR = "stylegan2-ffhq-config-f.pt"
E4E = "e4e_ffhq_encode.pt"
DEEP3D = "epoch_20.pth"
BFM = "BFM_model_front.mat"
LM3D = "similarity_Lm3D_all.mat"
IR_SE50 = "model_ir_se50.pth"
SPHERE20 = "net_sphere20_data_vggface2_acc_9955.pth"
SPHERE20_112X96 = "net_sphere20_112x96.pth"          # not an official name: the other CosFace layout
HOPENET = "hopenet_robust_alpha1.pkl"
BISENET = "79999_iter.pth"
ALEXNET = "alexnet-owt-7be5be79.pth"


def _bn_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _save(obj: Any, path: Path, legacy: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp, _use_new_zipfile_serialization=not legacy)
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------- generator
def generator_state(resolution: int = 64, w_dim: int = 64, n_mlp: int = 8, channel_max: int = 32
                    ) -> tuple["OrderedDict[str, torch.Tensor]", torch.Tensor]:
    """Rosinality ``g_ema`` state dict of a small config-f generator and its ``latent_avg`` ``[w_dim]``.

    Channel widths ``min(16 * 64 / res, channel_max)`` per resolution (16 at 64 px, 32 below):
    the loader infers them (``channel_base``/``channel_max``). Weights: ``det_weights`` policy
    ``unit``, FIR ``*.kernel`` buffers kept; ``latent_avg`` is the mean mapped W of 4096 seeded z.
    """
    from ipsb.backbone.stylegan2 import StyleGAN2Generator

    g = StyleGAN2Generator(resolution, w_dim, n_mlp=n_mlp, channel_base=16 * 64, channel_max=channel_max)
    state = det_state_dict(g.state_dict(), "unit", keep=lambda k: k.endswith(".kernel"))
    g.load_state_dict(state)
    with torch.no_grad():
        latent_avg = g.mean_latent(4096, seed=0).reshape(w_dim).clone()
    return state, latent_avg


def write_rosinality(path: Path, state: dict, latent_avg: torch.Tensor) -> Path:
    """``{"g_ema": state, "latent_avg": [w_dim]}``: the layout of rosinality's converted checkpoints."""
    return _save({"g_ema": state, "latent_avg": latent_avg}, path)


# ----------------------------------------------------------------------------------------------- e4e
def write_e4e(path: Path, decoder_state: dict, latent_avg: torch.Tensor, stylegan_size: int) -> Path:
    """The official e4e layout: ``{"state_dict": {encoder.*, decoder.*}, "opts": {...},
    "latent_avg": [num_ws, w_dim]}`` (``latent_avg`` = the generator's repeated per row, as e4e's
    training stores it; ``decoder.*`` = the generator the encoder was trained against)."""
    from ipsb.backbone.encoder import Encoder4Editing

    w_dim = int(latent_avg.numel())
    enc = Encoder4Editing(stylegan_size=stylegan_size, w_dim=w_dim)
    enc_state = det_state_dict(enc.state_dict(), "fan_in")
    sd = OrderedDict((f"encoder.{k}", v) for k, v in enc_state.items())
    sd.update((f"decoder.{k}", v) for k, v in decoder_state.items())
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": stylegan_size, "start_from_latent_avg": True,
            "dataset_type": "ffhq_encode", "checkpoint_path": str(path), "lpips_type": "alex",
            "progressive_start": 20000, "progressive_step_every": 2000}
    rows = enc.num_ws
    return _save({"state_dict": sd, "opts": opts, "latent_avg": latent_avg.reshape(1, w_dim).repeat(rows, 1)}, path)


# ----------------------------------------------------------------------------------------------- manifests
def manifest_state(manifest: str, drop_bn_counters: bool = False, **shape_overrides) -> "OrderedDict":
    """Deterministic (``fan_in``) tensors for every key of a ``tests/fixtures`` manifest."""
    m = read_manifest(FIXTURES / manifest)
    for key, shape in shape_overrides.items():
        m[key.replace("__", ".")] = [list(shape), m[key.replace("__", ".")][1]]
    if drop_bn_counters:
        m = {k: v for k, v in m.items() if not _bn_counter(k)}
    return state_from_manifest(m, "fan_in")


def write_deep3d(path: Path) -> Path:
    """``epoch_20.pth``: ``{"net_recon": ReconNet state}`` (Deep3DFaceRecon's ``save_networks``)."""
    return _save({"net_recon": manifest_state("deep3d/manifest_recon.json")}, path)


def write_ir_se50(path: Path) -> Path:
    """``model_ir_se50.pth``: the bare IR-SE50 state dict, without ``num_batches_tracked``."""
    return _save(manifest_state("arcface/manifest_ir_se50.json", drop_bn_counters=True), path)


def write_sphere20(path: Path, layout: str = "112x112") -> Path:
    """CosFace sphere20 state dict. ``112x112``: ``fc.weight [512, 512*7*7]`` (the layout the official
    file loads into, ReliableSwap's ``sphere()``); ``112x96``: ``[512, 512*7*6]`` (CosFace_pytorch's
    ``net.py`` default). The two differ only in ``fc.weight``."""
    if layout not in ("112x112", "112x96"):
        raise ValueError(f"layout must be '112x112' or '112x96', got {layout!r}")
    over = {"fc__weight": (512, 512 * 7 * 7)} if layout == "112x112" else {}
    return _save(manifest_state("arcface/manifest_cosface_sphere20.json", **over), path)


def write_hopenet(path: Path) -> Path:
    """``hopenet_robust_alpha1.pkl``: legacy-format pickle of the bare state dict, no BN counters."""
    return _save(manifest_state("hopenet/manifest.json", drop_bn_counters=True), path, legacy=True)


def write_bisenet(path: Path) -> Path:
    """``79999_iter.pth``: the bare BiSeNet state dict (``cp.*``, ``ffm.*``, ``conv_out*``)."""
    return _save(manifest_state("face_parsing/manifest.json"), path)


def write_alexnet(path: Path) -> Path:
    """torchvision's AlexNet ImageNet weights, trunk only (``features.{0,3,6,8,10}.{weight,bias}``)."""
    from torchvision.models import alexnet

    state = {k: v for k, v in alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    return _save(det_state_dict(state, "fan_in"), path)


def write_bfm(path: Path) -> Path:
    """``BFM_model_front.mat``: the synthetic mini BFM (official key names, dtypes and layout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / "deep3d" / "mini_bfm.mat", path)
    return path


def write_lm3d(path: Path) -> Path:
    """``similarity_Lm3D_all.mat``: key ``lm`` ``[68,3]`` float64 (Deep3D's ``load_lm3d`` reads it)."""
    import scipy.io

    lm = torch.load(FIXTURES / "deep3d" / "parity_preprocess.pt", weights_only=True)["synthetic_lm3d_68"]
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"lm": lm.double().numpy()})
    return path


# ----------------------------------------------------------------------------------------------- configs
def _point_at_files(node: Any, files: dict[str, Path]) -> Any:
    """Replace every string equal to a stand-in's file name by that file's absolute path."""
    if isinstance(node, dict):
        return {k: _point_at_files(v, files) for k, v in node.items()}
    if isinstance(node, list):
        return [_point_at_files(v, files) for v in node]
    if isinstance(node, str) and node in files:
        return str(files[node])
    return node


def backbone_config(files: dict[str, Path]) -> dict:
    """The shipped ``backbone/ffhq1024.yaml`` pointing at the stand-ins (LPIPS' AlexNet file too)."""
    cfg = _point_at_files(yaml.safe_load(SHIPPED_BACKBONE.read_text()), files)
    perceptual = cfg["init_args"].get("perceptual")
    if perceptual is not None:
        perceptual.setdefault("init_args", {})["backbone_weights"] = str(files[ALEXNET])
    return cfg


def metric_networks_config(files: dict[str, Path]) -> dict:
    """The ``networks`` of the shipped ``eval/ffpp.yaml``, file names written in it pointing at the
    stand-ins (files a preset names in code resolve through ``$IPSB_CHECKPOINTS``)."""
    return _point_at_files(yaml.safe_load(SHIPPED_FFPP.read_text())["model"]["init_args"]["networks"], files)


# ----------------------------------------------------------------------------------------------- all
@dataclass(frozen=True)
class StandinCheckpoints:
    """What :func:`write_standin_checkpoints` wrote.

    ``folder``: use it as ``$IPSB_CHECKPOINTS``; ``files``: official name -> path (plus the 112x96
    CosFace variant under :data:`SPHERE20_112X96`); ``backbone_yaml`` / ``metric_networks_yaml``:
    the configs; ``resolution``, ``num_ws``, ``w_dim``: the generator's; ``seconds``: time to write.
    """

    folder: Path
    files: dict[str, Path]
    backbone_yaml: Path
    metric_networks_yaml: Path
    resolution: int
    num_ws: int
    w_dim: int
    seconds: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)


def write_standin_checkpoints(folder: Path, resolution: int = 64, w_dim: int = 64) -> StandinCheckpoints:
    """Write every stand-in file and both configs into ``folder`` (see the module docstring)."""
    start = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g_state, latent_avg = generator_state(resolution, w_dim)
    files = {
        GENERATOR: write_rosinality(folder / GENERATOR, g_state, latent_avg),
        E4E: write_e4e(folder / E4E, g_state, latent_avg, resolution),
        DEEP3D: write_deep3d(folder / DEEP3D),
        BFM: write_bfm(folder / BFM),
        LM3D: write_lm3d(folder / LM3D),
        IR_SE50: write_ir_se50(folder / IR_SE50),
        SPHERE20: write_sphere20(folder / SPHERE20, "112x112"),
        SPHERE20_112X96: write_sphere20(folder / SPHERE20_112X96, "112x96"),
        HOPENET: write_hopenet(folder / HOPENET),
        BISENET: write_bisenet(folder / BISENET),
        ALEXNET: write_alexnet(folder / ALEXNET),
    }
    backbone_yaml = folder / "backbone.yaml"
    backbone_yaml.write_text(yaml.safe_dump(backbone_config(files), sort_keys=False))
    metrics_yaml = folder / "metric_networks.yaml"
    metrics_yaml.write_text(yaml.safe_dump(metric_networks_config(files), sort_keys=False))
    num_ws = 2 * int(math.log2(resolution)) - 2
    return StandinCheckpoints(folder, files, backbone_yaml, metrics_yaml, resolution, num_ws, w_dim,
                              time.perf_counter() - start, {n: p.stat().st_size for n, p in files.items()})


@pytest.fixture(scope="session")
def standin_checkpoints(tmp_path_factory) -> Iterator[StandinCheckpoints]:
    """Stand-in official checkpoints, written once per test session (a few seconds, ~750 MB).

    Point ``$IPSB_CHECKPOINTS`` at ``.folder`` (``monkeypatch.setenv``, or ``env=`` of a subprocess)
    for configs that name files, or use ``.backbone_yaml`` / ``.metric_networks_yaml`` (absolute paths).
    The folder is deleted at the end of the session.
    """
    standins = write_standin_checkpoints(tmp_path_factory.mktemp("standin_checkpoints"))
    yield standins
    shutil.rmtree(standins.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def standin_backbone(standin_checkpoints):
    """The FaceBackbone of ``standin_checkpoints.backbone_yaml`` (built once per session, ~2 s)."""
    from ipsb.backbone.bundle import FaceBackbone

    return FaceBackbone.from_config(standin_checkpoints.backbone_yaml)


def describe(standins: StandinCheckpoints) -> str:
    """One line per file: name and size in MB (for reports)."""
    return "\n".join(f"{n}: {s / 2**20:.1f} MB" for n, s in standins.sizes.items())


__all__ = ["StandinCheckpoints", "write_standin_checkpoints", "standin_checkpoints", "standin_backbone",
           "generator_state",
           "write_rosinality", "write_e4e", "write_deep3d", "write_ir_se50", "write_sphere20", "write_hopenet",
           "write_bisenet", "write_alexnet", "write_bfm", "write_lm3d", "backbone_config",
           "metric_networks_config", "describe"]
