"""The editing baselines the paper compares with, as :class:`~ipsb.editing.directions.DirectionSet` s.

* :func:`interfacegan` (Shen et al., CVPR 2020 / TPAMI): sample W codes, score each attribute with
  the backbone's 3DMM regressor on the synthesis, label the top and bottom ``fraction`` of the
  scores +1 / -1 and fit a linear SVM; the unit normal of its boundary is the edit direction. The
  conditional variant projects out the other attributes' normals (``n - Q Q^T n`` with ``Q`` an
  orthonormal basis of their span), so moving along it leaves their SVM scores unchanged. Applied
  on ``layers`` (default: all rows, i.e. an edit of the W code as InterfaceGAN does it).
* :func:`sefa` (Shen & Zhou, CVPR 2021): the eigenvectors of ``A^T A``, ``A [M,w_dim]`` the style
  (modulation) weights of the chosen W+ rows stacked, each output's weight vector normalised to unit
  length as SeFa's code does; ordered by eigenvalue. :mod:`ipsb.editing.style_maps` says what ``A`` is
  for StyleGAN2 and for the toy generator.
* :func:`ganspace` (Härkönen et al., NeurIPS 2020): PCA of sampled W codes (principal axes ordered
  by variance), applied on chosen rows.

W directions are placed on the chosen rows by :meth:`DirectionSet.from_w`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ipsb.basis.layers import LayerSpec, parse_layers
from ipsb.editing.attributes import Attribute
from ipsb.editing.directions import DirectionSet
from ipsb.editing.measure import coefficients_of
from ipsb.editing.style_maps import style_weights


def linear_svm(x: torch.Tensor, y: torch.Tensor, c: float = 1.0, max_iter: int = 500) -> tuple[torch.Tensor, float, float]:
    """A primal linear SVM: ``min 1/2 |beta|^2 + c * sum max(0, 1 - y (x beta + b))^2``.

    x ``[N,d]``, y ``[N]`` in {-1,+1} -> ``(beta [d], b, training accuracy)``. This is the
    squared-hinge L2 SVM (LinearSVC's default loss). Written here because scikit-learn is not a
    dependency of ipsb: the problem is smooth and convex in ``d + 1`` unknowns (``d`` = w_dim), so
    torch's L-BFGS with a strong-Wolfe line search solves it to tolerance in float64 in well under
    a second. The codes are centred and divided by one overall scale first (which leaves the
    boundary's direction unchanged).
    """
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"linear_svm needs x [N,d] and y [N], got {list(x.shape)} and {list(y.shape)}")
    if not bool(((y == 1) | (y == -1)).all()) or len(set(y.tolist())) != 2:
        raise ValueError("linear_svm needs labels in {-1,+1}, both present")
    x64, y64 = x.detach().double().cpu(), y.detach().double().cpu()
    mu, s = x64.mean(0), x64.std()
    xs = (x64 - mu) / s
    beta = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        margin = (1 - y64 * (xs @ beta + b)).clamp_min(0)
        loss = 0.5 * beta.pow(2).sum() + c * margin.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    beta_raw = beta.detach() / s                                  # boundary in the raw coordinates
    b_raw = float(b.detach() - (mu @ beta.detach()) / s)
    acc = float(((x64 @ beta_raw + b_raw) * y64 > 0).double().mean())
    return beta_raw.to(x.dtype), b_raw, acc


def project_out(normal: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """``normal [d]`` minus its component in the span of ``others [m,d]``, unit length."""
    if others.numel() == 0:
        return normal / normal.norm()
    q, _ = torch.linalg.qr(others.double().T)                    # [d,m] orthonormal span
    n = normal.double() - q @ (q.T @ normal.double())
    if float(n.norm()) < 1e-8 * float(normal.norm()):
        raise ValueError("the attribute's normal lies in the span of the conditioned normals")
    return (n / n.norm()).to(normal.dtype)


@torch.no_grad()
def interfacegan(backbone, attributes: Sequence[Attribute], n_samples: int = 2000, seed: int = 0,
                 truncation_psi: float = 0.7, fraction: float = 0.25, layers: LayerSpec = None,
                 conditional: bool = False, svm_c: float = 1.0, method: Optional[str] = None) -> DirectionSet:
    """InterfaceGAN boundaries for ``attributes`` (module docstring), one direction per attribute.

    ``conditional``: each normal with the other attributes' normals projected out.
    ``extras``: ``normals`` ``[A,w_dim]`` (unconditioned, unit), ``accuracy`` ``[A]`` on the labelled codes.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    gen, fm = backbone.generator, backbone.face_model
    codes = backbone.sample_wplus(n_samples, seed=seed, truncation_psi=truncation_psi)
    w = codes[:, 0]
    coeffs = coefficients_of(backbone, codes)
    normals, accs = [], []
    m = max(1, int(round(fraction * n_samples)))
    for attr in attributes:
        score = attr.read(coeffs, fm.coeff_groups)
        order = torch.argsort(score)
        idx = torch.cat([order[:m], order[-m:]])
        y = torch.cat([-torch.ones(m), torch.ones(m)])
        beta, _, acc = linear_svm(w[idx].cpu(), y)
        normals.append(beta / beta.norm())
        accs.append(acc)
    normals_t = torch.stack(normals)
    if conditional:
        dirs = torch.stack([project_out(normals_t[i], torch.cat([normals_t[:i], normals_t[i + 1:]]))
                            for i in range(len(attributes))])
    else:
        dirs = normals_t
    name = method or ("InterfaceGAN (conditional)" if conditional else "InterfaceGAN")
    return DirectionSet.from_w(name, [a.name for a in attributes], dirs, layers, gen.num_ws, gen.w_dim,
                               {"normals": normals_t, "accuracy": torch.tensor(accs)})


def sefa(generator, layers: LayerSpec, k: Optional[int] = None, normalize: bool = True,
         method: str = "SeFa") -> DirectionSet:
    """SeFa directions ``sefa:0..k-1`` on ``layers`` (module docstring); ``extras``: ``eigenvalues``
    ``[k]`` descending and ``A`` ``[M,w_dim]`` (the stacked, normalised style weights)."""
    weights = style_weights(generator)
    rows = [r for r in parse_layers(layers, generator.num_ws) if r in weights]
    if not rows:
        raise ValueError(f"no style weights on W+ rows {layers!r}")
    a = torch.cat([weights[r] for r in rows]).double().cpu()
    if normalize:
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    evals, evecs = torch.linalg.eigh(a.T @ a)
    order = torch.argsort(evals, descending=True)[:k]
    return DirectionSet.from_w(method, [f"sefa:{i}" for i in range(len(order))], evecs[:, order].T.float(), rows,
                               generator.num_ws, generator.w_dim, {"eigenvalues": evals[order].float(), "A": a.float()})


@torch.no_grad()
def ganspace(backbone, layers: LayerSpec, n_samples: int = 10000, seed: int = 0, k: Optional[int] = None,
             method: str = "GANSpace") -> DirectionSet:
    """GANSpace directions ``pc:0..k-1`` on ``layers``: principal axes of ``n_samples`` mapped W codes
    (untruncated); ``extras``: ``variances`` ``[k]`` descending, ``mean`` ``[w_dim]``."""
    gen = backbone.generator
    w = backbone.sample_wplus(n_samples, seed=seed)[:, 0].double().cpu()
    mean = w.mean(0)
    _, s, vh = torch.linalg.svd(w - mean, full_matrices=False)
    k = vh.shape[0] if k is None else min(int(k), vh.shape[0])
    var = s[:k] ** 2 / (n_samples - 1)
    return DirectionSet.from_w(method, [f"pc:{i}" for i in range(k)], vh[:k].float(), layers, gen.num_ws, gen.w_dim,
                               {"variances": var.float(), "mean": mean.float()})
