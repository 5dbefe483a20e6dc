"""ipsb: StyleIPSB face swapping in PyTorch Lightning."""
__version__ = "0.1.0"

# Install the config policy (allowlisted class paths, types checked before calls) before anything
# else can parse a config: see ipsb/config_objects.py.
from ipsb import config_objects as _config_objects  # noqa: E402,F401
