"""Retrieval metrics against pytorch-metric-learning's AccuracyCalculator, a brute-force Recall@K and hand-made
rankings."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslsec.eval import retrieval_metrics
from sslsec.eval.retrieval import kmeans_clusters

RETRIEVAL_KEYS = ("recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "r_precision", "map_at_r")


def clustered_embeddings(seed=0, num_classes=8, dim=12, noise=0.45):
    """Noisy Gaussian clusters around random directions, classes of 1 to 30 images (one lone class), any norms.

    The noise makes the classes overlap, so that every metric lies well inside (0, 100).
    """
    g = torch.Generator().manual_seed(seed)
    sizes = [1] + torch.randint(2, 31, (num_classes - 1,), generator=g).tolist()
    labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(sizes))
    labels = labels[torch.randperm(len(labels), generator=g)]
    centres = F.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
    directions = centres[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return directions * torch.empty(len(labels), 1).uniform_(0.1, 10.0, generator=g), labels


@pytest.fixture(scope="module")
def clustered():
    embeddings, labels = clustered_embeddings()
    return embeddings, labels, retrieval_metrics(embeddings, labels)


def brute_force_recall(embeddings, labels, k):
    """Recall@K (%) from the full N x N similarity: a hit when fewer than K other-class images are more similar
    than the query's most similar same-class image (the SEC authors' counting rule); lone queries left out."""
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    similarity = (unit @ unit.T).fill_diagonal_(-math.inf)
    hits = []
    for query in range(len(labels)):
        same = labels == labels[query]
        same[query] = False
        if same.any():
            best_positive = similarity[query][same].max()
            hits.append(int((similarity[query][~same] > best_positive).sum()) < k)
    return 100.0 * sum(hits) / len(hits)


def test_matches_pytorch_metric_learning(clustered):
    accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.inference import CustomKNN

    embeddings, labels, ours = clustered
    calculator = accuracy_calculator.AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI"), k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity()), device=torch.device("cpu"),
        kmeans_func=lambda x, k: kmeans_clusters(F.normalize(x, dim=1), k, seed=0))
    theirs = calculator.get_accuracy(embeddings, labels)  # query as reference: each image against all the others
    assert 0.2 < theirs["precision_at_1"] < 0.95 and 0.1 < theirs["mean_average_precision_at_r"] < 0.9  # fractions
    assert ours["recall_at_1"] == pytest.approx(100 * theirs["precision_at_1"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(100 * theirs["r_precision"], abs=1e-9)
    assert ours["map_at_r"] == pytest.approx(100 * theirs["mean_average_precision_at_r"], abs=1e-9)
    assert ours["nmi"] == pytest.approx(100 * theirs["NMI"], abs=1e-9)


def test_recall_at_k_matches_brute_force_and_grows_with_k(clustered):
    embeddings, labels, ours = clustered
    for k in (1, 2, 4, 8):
        assert ours[f"recall_at_{k}"] == pytest.approx(brute_force_recall(embeddings, labels, k), abs=1e-9)
    recalls = [ours[f"recall_at_{k}"] for k in (1, 2, 4, 8)]
    assert recalls == sorted(recalls) and 20 < recalls[0] < recalls[-1] < 100
    assert ours["map_at_r"] <= ours["r_precision"] <= 100  # precision@i <= 1 at every counted rank
    assert 0 < ours["nmi"] < 100


def test_hand_computed_ranking():
    # Five points on a quarter circle (degrees); rankings by angle gap, R = 2 for class 0 and 1 for class 1:
    # q0: [1:b 2:a 3:a 4:b] RP 1/2 MAP 1/4 | q1: [0:a 2:a 3:a 4:b] RP 0 MAP 0 | q2: [1:b 3:a 0:a 4:b] RP 1/2 MAP 1/4
    # q3: [2:a 4:b 1:b 0:a] RP 1/2 MAP 1/2 | q4: [3:a 2:a 1:b 0:a] RP 0 MAP 0.
    angles = torch.tensor([0.0, 10.0, 25.0, 45.0, 70.0]).deg2rad()
    embeddings = torch.stack([angles.cos(), angles.sin()], dim=1).double()
    labels = torch.tensor([0, 1, 0, 0, 1])
    expected = {"recall_at_1": 20.0, "recall_at_2": 60.0, "recall_at_4": 100.0, "recall_at_8": 100.0,
                "r_precision": 30.0, "map_at_r": 20.0}
    scores = retrieval_metrics(embeddings, labels, nmi=False)
    assert scores == pytest.approx(expected, abs=1e-12)  # K = 8 > N - 1 is capped at the 4 other images
    # a lone image (class 2) far from all: left out of every retrieval metric, and ranked last by the others
    lone = torch.tensor([[math.cos(math.radians(-120)), math.sin(math.radians(-120))]], dtype=torch.float64)
    scores = retrieval_metrics(torch.cat([embeddings, lone]), torch.cat([labels, torch.tensor([2])]), ks=(1, 2, 4),
                               nmi=False)
    assert scores == pytest.approx({k: v for k, v in expected.items() if k != "recall_at_8"}, abs=1e-12)


def test_perfect_embeddings_score_100_everywhere():
    labels = torch.arange(5).repeat_interleave(torch.tensor([2, 3, 4, 5, 6]))
    embeddings = torch.eye(8)[labels] * torch.linspace(0.5, 3.0, len(labels))[:, None]
    assert retrieval_metrics(embeddings, labels) == pytest.approx(
        {**{key: 100.0 for key in RETRIEVAL_KEYS}, "nmi": 100.0}, abs=1e-9)


def test_chunking_norms_and_label_values_do_not_matter(clustered):
    embeddings, labels, ours = clustered
    retrieval = {key: ours[key] for key in RETRIEVAL_KEYS}
    assert retrieval_metrics(embeddings, labels, batch_size=7, nmi=False) == pytest.approx(retrieval, abs=1e-9)
    scales = torch.empty(len(labels), 1).uniform_(0.01, 100.0, generator=torch.Generator().manual_seed(1))
    rescaled = embeddings * scales
    assert retrieval_metrics(rescaled, labels, batch_size=len(labels)) == pytest.approx(ours, abs=1e-9)
    assert retrieval_metrics(embeddings, 7 * labels + 1000) == pytest.approx(ours, abs=1e-9)


def test_nmi_is_deterministic_under_seed():
    embeddings, labels = clustered_embeddings(seed=2, noise=0.8)
    first, again = (retrieval_metrics(embeddings, labels, seed=3)["nmi"] for _ in range(2))
    assert first == again and 0 < first < 100


@pytest.mark.parametrize("embeddings, labels, message", [
    (torch.randn(6), torch.zeros(6, dtype=torch.long), "2-D float"),
    (torch.randint(0, 3, (6, 4)), torch.zeros(6, dtype=torch.long), "2-D float"),
    (torch.randn(6, 4), torch.zeros(5, dtype=torch.long), "6 rows but labels has 5"),
    (torch.randn(6, 4), torch.zeros(6), "integer"),
    (torch.randn(6, 4), torch.zeros(6, 1, dtype=torch.long), "integer"),
    (torch.randn(0, 4), torch.zeros(0, dtype=torch.long), "empty"),
    (torch.randn(6, 4).index_fill_(0, torch.tensor([2]), math.nan), torch.zeros(6, dtype=torch.long), "NaN"),
    (torch.randn(6, 4).index_fill_(0, torch.tensor([3]), 0.0), torch.zeros(6, dtype=torch.long), "all zeros"),
    (torch.randn(3, 4), torch.arange(3), "every one of the 3 labels is unique"),
])
def test_bad_inputs_raise_a_clear_error(embeddings, labels, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(embeddings, labels)


@pytest.mark.parametrize("keyword", [{"ks": ()}, {"ks": (0, 1)}, {"ks": (1.5,)}, {"batch_size": 0}])
def test_bad_options_raise_a_clear_error(keyword):
    with pytest.raises(ValueError, match=next(iter(keyword))):
        retrieval_metrics(torch.randn(6, 4), torch.zeros(6, dtype=torch.long), **keyword)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(clustered):
    embeddings, labels, ours = clustered
    assert retrieval_metrics(embeddings.cuda(), labels, batch_size=16) == pytest.approx(ours, abs=1e-6)
