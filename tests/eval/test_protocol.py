"""The retrieval protocol of a run: scores and the embedding-norm spread from one pass over each split."""

import pytest
import torch
from torch import nn

from sslsec.data import ImageArrays
from sslsec.eval import retrieval_scores


class PixelEmbedder(nn.Sequential):
    """Embeds an image as its pixels in [0, 1] (a 1x1 convolution of weight 1, flattened): the embeddings are known."""

    feature_dim = 16

    def __init__(self):
        super().__init__(nn.Conv2d(1, 1, 1, bias=False), nn.Flatten())
        nn.init.ones_(self[0].weight)


def _dataset(seed, n=30):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
    return ImageArrays(images, torch.arange(n) % 3, ["a", "b", "c"], (0.0,), (1.0,), "pixels")


def test_retrieval_scores_hold_the_scores_and_the_norm_spread_of_each_split():
    splits = {"val": _dataset(0), "none": None, "test": _dataset(1, n=24)}
    result = retrieval_scores(PixelEmbedder(), splits, seed=0)
    assert set(result) == {"val", "test"}
    for name in result:
        dataset = splits[name]
        embeddings = dataset.images.double().flatten(1) / 255
        norms = embeddings.norm(dim=1)
        expected_spread = (norms.std() / norms.mean()).item()  # sample std over mean
        cosine = nn.functional.normalize(embeddings, dim=1) @ nn.functional.normalize(embeddings, dim=1).T
        cosine.fill_diagonal_(-2)
        recall_at_1 = 100 * (dataset.labels[cosine.argmax(dim=1)] == dataset.labels).double().mean().item()
        scores = result[name]
        assert (scores["images"], scores["classes"]) == (len(dataset), 3)
        assert scores["norm_mean"] == pytest.approx(norms.mean().item(), rel=1e-5)
        assert scores["norm_std_over_mean"] == pytest.approx(expected_spread, rel=1e-4)
        assert scores["recall_at_1"] == pytest.approx(recall_at_1)
        assert {"map_at_r", "nmi", "recall_at_8"} <= set(scores)
