"""Identity metrics of a face swap: ID retrieval (top-1/top-5) and ID similarity.

* :class:`IDRetrieval` (the FF++ protocol, docs/evaluation.md): the *gallery* holds the identity
  embeddings of all source frames (for FF++ the 10 selected frames of every original video) with
  the id of the video each came from; every swap result is a *query* carrying the id of its true
  source video. Videos are ranked by their best (highest-cosine) gallery frame; a query is correct
  at k when the true source video is among the k best videos. Top-1 is thus "the nearest gallery
  frame comes from the true source video". Ties count in the query's favour.
* :class:`IDSimilarity`: mean cosine between the swap's embedding and the source's embedding (over
  all items, or, with ``first_items_divisor=d``, over the first ``N // d`` items by sample index: the
  cosine ReliableSwap's FF++ code prints, see docs/evaluation.md).

The FF++ gallery can also be each item's own source image labelled by the item's target video, with
queries labelled the same way (ReliableSwap's retrieval: the prediction is the target-video group of
the nearest source row); the metric is the same, only the labels the caller passes differ.

Embeddings ``[B,D]`` come from any :class:`~ipsb.backbone.interfaces.IdentityEncoder` (CosFace
sphere20 for FF++, ArcFace for CelebA-HQ, dlib's ResNet as a registry-shipped alternative); they are
L2-normalised here again, so raw features work too. Results are fractions in [0,1] (tables show
percent) and exact under DDP: states are per-sample ``cat`` states de-duplicated by
``sample_index`` (see :mod:`ipsb.metrics.sample_dedup`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from ipsb.losses.identity import identity_cosine
from ipsb.metrics.sample_dedup import cat_state, check_sample_index, dedup_by_index, per_sample_states


def _check_embeddings(emb: Tensor, what: str) -> Tensor:
    if emb.dim() != 2:
        raise ValueError(f"{what}: expected embeddings of shape [B,D], got {list(emb.shape)}")
    return emb.detach().float()


def _check_ids(ids: Tensor, batch: int, what: str) -> Tensor:
    ids = torch.as_tensor(ids)
    if ids.dim() != 1 or ids.shape[0] != batch or ids.dtype.is_floating_point:
        raise ValueError(f"{what}: expected integer video ids of shape [{batch}], got "
                         f"{ids.dtype} {list(ids.shape)}")
    return ids.long()


class IDRetrieval(Metric):
    """Top-k identity retrieval of swap results against a gallery of source frames.

    Call :meth:`update_gallery` with every source frame's embedding and :meth:`update` with every
    swap result's embedding (any order, any number of calls). :meth:`compute` returns
    ``{"top1": t1, "top5": t5}`` (keys follow ``top_k``), fractions of queries in [0,1].
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, top_k: Sequence[int] = (1, 5), chunk_size: int = 1024, **kwargs):
        super().__init__(**kwargs)
        if not top_k or any(int(k) < 1 for k in top_k):
            raise ValueError(f"top_k must be positive integers, got {top_k}")
        self.top_k = tuple(int(k) for k in top_k)
        self.chunk_size = int(chunk_size)
        for name in ("gallery_emb", "gallery_video", "gallery_index",
                     "query_emb", "query_video", "query_index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update_gallery(self, embeddings: Tensor, video_ids: Tensor, sample_index: Tensor) -> None:
        """Add gallery frames: embeddings ``[G,D]``, video ids ``[G]`` int, sample_index ``[G]``."""
        emb = _check_embeddings(embeddings, "IDRetrieval.update_gallery")
        self.gallery_emb.append(emb)
        self.gallery_video.append(_check_ids(video_ids, emb.shape[0], "IDRetrieval.update_gallery").to(emb.device))
        self.gallery_index.append(check_sample_index(sample_index, emb.shape[0], "IDRetrieval.update_gallery").to(emb.device))

    def update(self, embeddings: Tensor, source_video_ids: Tensor, sample_index: Tensor) -> None:
        """Add swap results: embeddings ``[B,D]``, true source video ids ``[B]`` int, sample_index ``[B]``."""
        emb = _check_embeddings(embeddings, "IDRetrieval.update")
        self.query_emb.append(emb)
        self.query_video.append(_check_ids(source_video_ids, emb.shape[0], "IDRetrieval.update").to(emb.device))
        self.query_index.append(check_sample_index(sample_index, emb.shape[0], "IDRetrieval.update").to(emb.device))

    def compute(self) -> dict[str, Tensor]:
        g_idx = cat_state(self.gallery_index)
        q_idx = cat_state(self.query_index)
        if g_idx.numel() == 0 or q_idx.numel() == 0:
            raise RuntimeError("IDRetrieval.compute: needs at least one gallery frame (update_gallery) "
                               "and one query (update)")
        _, g_emb, g_vid = dedup_by_index(g_idx, cat_state(self.gallery_emb), cat_state(self.gallery_video),
                                         what="IDRetrieval gallery")
        _, q_emb, q_vid = dedup_by_index(q_idx, cat_state(self.query_emb), cat_state(self.query_video),
                                         what="IDRetrieval queries")
        videos, g_col = torch.unique(g_vid, sorted=True, return_inverse=True)
        pos = torch.searchsorted(videos, q_vid)
        found = (pos < videos.numel()) & (videos[pos.clamp(max=videos.numel() - 1)] == q_vid)
        if not bool(found.all()):
            missing = q_vid[~found][0].item()
            raise ValueError(f"IDRetrieval.compute: source video id {missing} of a query has no gallery frame")
        g_emb = F.normalize(g_emb, dim=1)
        q_emb = F.normalize(q_emb, dim=1)
        correct = {k: [] for k in self.top_k}
        for start in range(0, q_emb.shape[0], self.chunk_size):
            sim = q_emb[start:start + self.chunk_size] @ g_emb.t()                      # [Q,G]
            per_video = sim.new_full((sim.shape[0], videos.numel()), -float("inf"))
            per_video = per_video.scatter_reduce(1, g_col.expand_as(sim), sim, reduce="amax")  # [Q,V]
            true = per_video.gather(1, pos[start:start + self.chunk_size, None])         # [Q,1]
            rank = (per_video > true).sum(1)                                            # videos strictly better
            for k in self.top_k:
                correct[k].append(rank < k)
        # float64, as numpy's mean in the reference: 100 * fraction prints exactly (e.g. 1/10 -> 10.0)
        return {f"top{k}": torch.cat(v).double().mean() for k, v in correct.items()}


class IDSimilarity(Metric):
    """Mean cosine similarity between swap and source identity embeddings, in [-1,1].

    ``first_items_divisor``: ``None`` averages every item; ``d`` averages only the first ``N // d``
    items in sample-index order (NaN when ``N < d``), which is what ReliableSwap's FF++ code prints
    (``d = 10``, its frames per video).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, first_items_divisor: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if first_items_divisor is not None and int(first_items_divisor) < 1:
            raise ValueError(f"first_items_divisor must be a positive integer or None, got {first_items_divisor}")
        self.first_items_divisor = None if first_items_divisor is None else int(first_items_divisor)
        self.add_state("cosine", default=[], dist_reduce_fx="cat")
        self.add_state("sample_index", default=[], dist_reduce_fx="cat")

    def update(self, swap_embeddings: Tensor, source_embeddings: Tensor, sample_index: Tensor) -> None:
        """swap / source embeddings ``[B,D]`` (row i of each belongs to pair i), sample_index ``[B]``."""
        a = _check_embeddings(swap_embeddings, "IDSimilarity.update")
        b = _check_embeddings(source_embeddings, "IDSimilarity.update")
        if a.shape != b.shape:
            raise ValueError(f"IDSimilarity.update: swap {list(a.shape)} and source {list(b.shape)} "
                             f"embeddings must have the same shape")
        self.cosine.append(identity_cosine(a, b))
        self.sample_index.append(check_sample_index(sample_index, a.shape[0], "IDSimilarity.update").to(a.device))

    def compute(self) -> Tensor:
        _, cos = per_sample_states(self.sample_index, self.cosine, what="IDSimilarity")
        if self.first_items_divisor is not None:
            cos = cos[:cos.shape[0] // self.first_items_divisor]
        return cos.mean()
