"""The toy face world (DESIGN.md section 5): a synthetic face world with known ground truth.

``world`` (seeded definition and layout), ``face_model`` (:class:`ToyFaceModel`), ``soft_renderer``
(:class:`SoftRenderer`), ``generator`` (:class:`ToyGenerator`), ``networks`` (trained toy regressor,
identity, masker), ``train`` (their training script), ``report`` (``ipsb toy-report``).
"""
from ipsb.backbone.toy.face_model import ToyFaceModel
from ipsb.backbone.toy.generator import ToyGenerator
from ipsb.backbone.toy.soft_renderer import SoftRenderer

__all__ = ["ToyFaceModel", "ToyGenerator", "SoftRenderer"]
