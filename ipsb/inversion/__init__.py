"""Inversion of photos into W+ codes of the backbone's generator (``ipsb predict`` with invert.yaml)."""
from ipsb.inversion.module import InversionModule

__all__ = ["InversionModule"]
