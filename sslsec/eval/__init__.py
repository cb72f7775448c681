"""Frozen-backbone evaluation: features (:mod:`.features`), the linear probe (:mod:`.linear`), kNN (:mod:`.knn`),
the protocol that runs both with a config's ``eval`` section (:mod:`.protocol`), and the
retrieval metrics of metric learning on held-out classes (:mod:`.retrieval`), and face verification by the
insightface protocol (:mod:`.verification`)."""

from sslsec.eval.features import EvaluationError, check_compatible, extract_features
from sslsec.eval.knn import knn_accuracy, knn_on_features
from sslsec.eval.linear import (LinearClassifier, classification_scores, fit_linear_classifier, linear_probe,
                                probe_on_features)
from sslsec.eval.protocol import (eval_crop_size, evaluate_backbone, random_backbone, retrieval_scores,
                                  score_retrieval, score_verification)
from sslsec.eval.retrieval import retrieval_metrics
from sslsec.eval.verification import (pairs_from_split, split_verification, verification_metrics,
                                      verification_roc)

__all__ = ["EvaluationError", "LinearClassifier", "check_compatible", "classification_scores", "eval_crop_size",
           "evaluate_backbone", "extract_features", "fit_linear_classifier", "knn_accuracy", "knn_on_features",
           "linear_probe", "pairs_from_split", "probe_on_features", "random_backbone", "retrieval_metrics",
           "retrieval_scores", "score_retrieval", "score_verification", "split_verification", "verification_metrics",
           "verification_roc"]
