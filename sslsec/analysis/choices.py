"""The studies' variant and loss names and their defaults, in a module free of torch: the command line's
``--help`` lists them before anything heavy is imported (:mod:`sslsec.cli`)."""

VARIANTS = ("none", "sec", "sec_constant", "sec_linear", "sec_paper", "sec_ema", "l2")  # sslsec.analysis.study
DEFAULT_VARIANTS = ("none", "sec", "sec_ema", "l2")

# sslsec.analysis.metric_study: the paper's losses, + NormFace; its variants and candidate weights
METRIC_DEFAULT_LOSSES = ("triplet", "semihard_triplet", "npair", "multi_similarity", "normface")
METRIC_DEFAULT_VARIANTS = ("none", "l2", "sec")
METRIC_DEFAULT_WEIGHTS = {"sec": (0.1, 1.0), "l2": (1e-3, 1e-2)}
