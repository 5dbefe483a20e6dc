"""A W&B logger that falls back to offline mode instead of crashing when W&B cannot be reached.

Lightning's ``WandbLogger`` calls ``wandb.init`` in online mode; without an API key (no
``WANDB_API_KEY`` and no ``~/.netrc`` entry for the W&B host) or without network, wandb raises or
prompts, and under DDP the rank that raises takes the whole job down. :class:`WandbLogger` decides
once, in its constructor and identically on every rank, whether online logging can work; if not it
switches to ``offline=True`` (runs are kept under ``save_dir/wandb`` for a later ``wandb sync``) and
rank 0 writes ONE warning line saying why.

Use it in configs as ``class_path: ipsb.loggers.WandbLogger`` with Lightning's own ``init_args``.
"""
from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger("ipsb.loggers")

DEFAULT_BASE_URL = "https://api.wandb.ai"
OFFLINE_MODES = ("offline", "dryrun", "disabled")


def _host_port(base_url: str) -> tuple[str, int]:
    u = urlparse(base_url)
    return u.hostname or "api.wandb.ai", u.port or (80 if u.scheme == "http" else 443)


def has_api_key(host: str) -> bool:
    """True when ``WANDB_API_KEY`` is set or the netrc file (``$NETRC`` or ``~/.netrc``) has ``host``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    if not path.is_file():
        return False
    try:
        auth = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def can_reach(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_reason(timeout: float = 3.0) -> Optional[str]:
    """Why online W&B logging cannot work here (a sentence), or ``None`` when it can."""
    base = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
    host, port = _host_port(base)
    if not has_api_key(host):
        return f"no W&B API key (WANDB_API_KEY unset and no netrc entry for {host})"
    if not can_reach(host, port, timeout):
        return f"W&B server {host}:{port} is unreachable"
    return None


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` (same arguments) plus the offline fallback.

    Extra argument: ``connect_timeout`` (seconds for the reachability check). With ``offline=True``
    or ``WANDB_MODE`` in (offline, dryrun, disabled) nothing is checked.
    """

    def __init__(self, *args, offline: bool = False, connect_timeout: float = 3.0, **kwargs):
        self.fallback_reason: Optional[str] = None
        if not offline and os.environ.get("WANDB_MODE", "").lower() not in OFFLINE_MODES \
                and kwargs.get("experiment") is None:
            self.fallback_reason = offline_reason(connect_timeout)
            if self.fallback_reason is not None:
                offline = True
                if rank_zero_only.rank == 0:
                    log.warning("W&B logging falls back to offline mode: %s; runs are saved under "
                                "%s (upload later with `wandb sync`).", self.fallback_reason,
                                Path(kwargs.get("save_dir", ".")) / "wandb")
        super().__init__(*args, offline=offline, **kwargs)
