"""ipsb.basis: the StyleIPSB W+ basis (docs/method.md, section 3: ipsb's exact basis).

``jacobian`` (per-sample Jacobians in W+ with torch.func), ``probe`` (attribute + identity Jacobians
of a backbone), ``accumulator`` (float64 Gram sums, DDP all-reduce), ``eigensolver`` (generalized
eigenproblem, orthonormal union), ``solve`` (Grams -> Basis), ``layers`` (the W+ layer set),
``artifact`` (the saved :class:`Basis`).
"""
from ipsb.basis.artifact import Basis
from ipsb.basis.layers import layer_mask

__all__ = ["Basis", "layer_mask"]
