"""ipsb: StyleIPSB face swapping in PyTorch Lightning."""
__version__ = "0.1.0"
