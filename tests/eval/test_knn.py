"""kNN accuracy on features and through a backbone."""

from sslsec.eval import knn_accuracy, knn_on_features, linear_probe
from tests.fixtures import clustered_features, small_cnn, template_dataset

def test_knn_on_clustered_features_is_near_perfect_and_k_is_capped():
    train, test = clustered_features(30, seed=0), clustered_features(10, seed=0)
    assert knn_on_features(train, test, 10, k=200) >= 99.0  # 300 train features < k: capped, no error
    assert knn_on_features(train, test, 10, k=5) >= 99.0


def test_knn_and_probe_on_clustered_images_are_near_perfect():
    train, test, backbone = template_dataset(20, seed=0), template_dataset(5, seed=1), small_cnn()
    assert knn_accuracy(backbone, train, test, k=20, batch_size=64) >= 98.0
    assert backbone.training  # extraction runs in eval mode and restores the mode it found
    result = linear_probe(backbone, train, test, epochs=20, feature_batch_size=64)
    assert result["best_top1"] >= result["top1"] and 1 <= result["best_epoch"] <= 20
    assert result["top1"] >= 98.0 and result["top5"] >= result["top1"]
    assert (result["num_classes"], result["train_size"], result["test_size"]) == (10, 200, 50)
