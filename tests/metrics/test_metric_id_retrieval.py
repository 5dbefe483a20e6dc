"""IDRetrieval / IDSimilarity on hand-computed cases, de-duplication and error messages."""
import pytest
import torch

from ipsb.metrics.id_retrieval import IDRetrieval, IDSimilarity

GALLERY = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
GALLERY_VIDEO = torch.tensor([10, 10, 20, 30])
# per-video best cosine (v10, v20, v30) -> true video's rank
QUERIES = torch.tensor([[0.6, 0.8],     # (0.96, 0.8, -0.6), src 20 -> rank 1
                        [1.0, 0.1],     # src 10 -> rank 0
                        [-1.0, 0.0],    # (-0.8, 0, 1), src 20 -> rank 1
                        [-0.1, -1.0]])  # (-0.1, -1, 0.1), src 30 -> rank 0
QUERY_SOURCE = torch.tensor([20, 10, 20, 30])


def test_retrieval_hand_computed():
    m = IDRetrieval(top_k=(1, 2))
    m.update_gallery(GALLERY, GALLERY_VIDEO, torch.arange(4))
    m.update(QUERIES * 3.0, QUERY_SOURCE, torch.arange(4))  # unnormalised embeddings are fine
    out = m.compute()
    assert out["top1"].item() == pytest.approx(0.5)
    assert out["top2"].item() == pytest.approx(1.0)


def test_retrieval_drops_padded_duplicates_and_chunks():
    m = IDRetrieval(top_k=(1, 5), chunk_size=3)
    m.update_gallery(GALLERY[:2], GALLERY_VIDEO[:2], torch.tensor([0, 1]))
    m.update_gallery(GALLERY[2:], GALLERY_VIDEO[2:], torch.tensor([2, 3]))
    m.update_gallery(GALLERY[:1], GALLERY_VIDEO[:1], torch.tensor([0]))       # padding repeat
    m.update(QUERIES, QUERY_SOURCE, torch.arange(4))
    m.update(QUERIES[1:2], QUERY_SOURCE[1:2], torch.tensor([1]))             # padding repeat (a correct one)
    out = m.compute()
    assert out["top1"].item() == pytest.approx(0.5)   # would be 0.6 if the repeat counted
    assert out["top5"].item() == pytest.approx(1.0)


def test_retrieval_errors():
    m = IDRetrieval()
    m.update_gallery(GALLERY, GALLERY_VIDEO, torch.arange(4))
    m.update(QUERIES[:1], torch.tensor([99]), torch.tensor([0]))
    with pytest.raises(ValueError, match="99"):
        m.compute()
    with pytest.raises(ValueError, match="sample_index"):
        m.update(QUERIES, QUERY_SOURCE, torch.arange(3))
    with pytest.raises(ValueError, match="video ids"):
        m.update(QUERIES, QUERY_SOURCE.float(), torch.arange(4))
    m2 = IDRetrieval()
    m2.update_gallery(GALLERY, GALLERY_VIDEO, torch.arange(4))
    m2.update(QUERIES[:1], QUERY_SOURCE[:1], torch.tensor([0]))
    m2.update(QUERIES[1:2], QUERY_SOURCE[1:2], torch.tensor([0]))  # clashing index, other value
    with pytest.raises(ValueError, match="sample_index 0"):
        m2.compute()


def test_similarity_hand_computed_with_duplicate():
    m = IDSimilarity()
    m.update(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [2.0, 2.0]]), torch.tensor([0, 1]))
    m.update(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 2.0]]), torch.tensor([1]))
    assert m.compute().item() == pytest.approx(0.5)
    m.update(torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([2]))
    assert m.compute().item() == pytest.approx(0.0, abs=1e-6)
