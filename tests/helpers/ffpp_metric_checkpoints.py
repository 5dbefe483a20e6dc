"""Stand-in files for the FF++ metric networks, rebuilt from the fixtures' key/shape manifests with
the golden fixtures' weight rule (``det_weights``, policy ``fan_in``), under their official names:

* ``net_sphere20_data_vggface2_acc_9955.pth``: CosFace sphere20, 112x112 variant (plain state dict);
* ``hopenet_robust_alpha1.pkl``: HopeNet (plain state dict);
* ``epoch_20.pth``: Deep3DFaceRecon ``{"net_recon": state dict}``.

These are exactly the weights the ``ffpp_reliableswap`` fixture's reference run used.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from helpers.manifest_state import read_manifest, state_from_manifest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MANIFESTS = {
    "sphere20_112x112": FIXTURES / "ffpp_reliableswap" / "manifest_cosface_sphere20_112x112.json",
    "hopenet": FIXTURES / "hopenet" / "manifest.json",
    "recon": FIXTURES / "deep3d" / "manifest_recon.json",
}
FILE_NAMES = {"sphere20_112x112": "net_sphere20_data_vggface2_acc_9955.pth",
              "hopenet": "hopenet_robust_alpha1.pkl", "recon": "epoch_20.pth"}


@lru_cache(maxsize=None)
def standin_state(network: str) -> dict:
    """The stand-in state dict of ``sphere20_112x112``, ``hopenet`` or ``recon`` (cached; do not modify)."""
    return state_from_manifest(read_manifest(MANIFESTS[network]))


def write_ffpp_metric_checkpoints(folder: str | Path) -> dict[str, Path]:
    """Write the three stand-in files into ``folder``; returns ``{network: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for network, name in FILE_NAMES.items():
        state = standin_state(network)
        out[network] = folder / name
        torch.save({"net_recon": state} if network == "recon" else state, out[network])
    return out
