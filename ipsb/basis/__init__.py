"""ipsb.basis: the StyleIPSB W+ basis (DESIGN.md section 1, "Our basis").

``jacobian`` (per-sample Jacobians in W+ with torch.func), ``probe`` (attribute + identity Jacobians
of a backbone), ``accumulator`` (float64 Gram sums, DDP all-reduce), ``eigensolver`` (generalized
eigenproblem, orthonormal union), ``solve`` (Grams -> Basis), ``lanczos`` (exact HVPs + Lanczos for
distances that do not vanish at w0), ``layers`` (the W+ layer set), ``artifact`` (the saved :class:`Basis`).
"""
from ipsb.basis.artifact import Basis
from ipsb.basis.layers import layer_mask

__all__ = ["Basis", "layer_mask"]
