"""Training of the networks the frozen backbone ships, not of the ipsb stages (``ipsb fit`` trains those).

* :mod:`ipsb.training.toy_networks`: ``python -m ipsb.training.toy_networks``, the toy world's
  regressor, identity encoder, masker and W+ encoder (``ipsb/assets/toy/``), with
* :mod:`ipsb.training.toy_data` (rendered, cached training shards, same-identity partners,
  attribute tangents), :mod:`ipsb.training.toy_identity` (the identity encoder's invariance
  phases) and :mod:`ipsb.training.toy_encoder` (the W+ encoder's losses).

Nothing under :mod:`ipsb.backbone` imports this package.
"""
