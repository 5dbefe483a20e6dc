"""The toy face world: a synthetic face world with known ground truth.

``world`` (seeded definition and layout), ``face_model`` (:class:`ToyFaceModel`), ``soft_renderer``
(:class:`SoftRenderer`), ``generator`` (:class:`ToyGenerator`), ``networks`` (trained toy regressor,
identity, masker, W+ encoder), ``data`` (seeded samples), ``report`` (``ipsb toy-report``). The
networks are trained by :mod:`ipsb.training.toy_networks`.
"""
from ipsb.backbone.toy.face_model import ToyFaceModel
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.soft_renderer import SoftRenderer

__all__ = ["ToyFaceModel", "ToyGenerator", "SoftRenderer"]
