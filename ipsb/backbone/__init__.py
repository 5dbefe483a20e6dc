"""Frozen pretrained networks (one file each: architecture + checkpoint loader) and the toy world.

Dependency rule: nothing in this package imports from ipsb above `ipsb.backbone`
(only `ipsb.checkpoints` and `ipsb.utils` helpers).
"""
