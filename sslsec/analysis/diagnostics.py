"""Norm diagnostics: how the projections a contrastive loss sees are spread in length and angle.

The Spherical Embedding Constraint (Zhang et al. 2020, "Deep Metric Learning with Spherical Embedding")
is motivated by the spread of the embedding norms before normalization: with a normalized loss, a
large-norm embedding gets small gradients, so a wide norm distribution slows and skews training. This
module measures, on a batch of (test) images seen through the method's own augmentation:

- the norms ``||z||`` of the projections before normalization (mean, std and std/mean);
- the cosine similarity of positive pairs (two views of one image) and negative pairs (views of
  different images), whose gap is what the contrastive loss separates.

Example::

    samples = projection_samples(backbone, head, test, SimCLRAugment(28, test.mean, test.std), n=1024)
    print(summarize(samples)["norm_std_over_mean"])
    save_histograms(samples, "runs/simclr_fmnist", suffix="_seed0")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslsec.augment import MultiView
from sslsec.data import BatchLoader, load_split
from sslsec.eval.features import EvaluationError, check_compatible
from sslsec.methods import build_augment
from sslsec.runs import RunPaths, check_scores_file, load_run, load_sec_head, scores_protocol, write_scores

HISTOGRAMS = {"norms": "projection_norms.png", "cosines": "pair_cosines.png"}


@torch.no_grad()
def projection_samples(backbone: nn.Module, head: nn.Module, dataset: Any, augment: nn.Module, n: int = 1024, *,
                       batch_size: int = 256, seed: int = 0, num_workers: Optional[int] = None) -> Dict[str, Tensor]:
    """Projections of two augmented views of ``n`` random images of ``dataset``, in eval mode.

    Runs on the device of ``backbone``'s parameters; both modules' train/eval modes are restored.
    ``num_workers``: the workers that decode a JPEG folder (``data.num_workers``).

    Returns:
        ``norms`` ``(2n,)``: ``||z||`` of both views before normalization; ``positive_cosines`` ``(n,)``:
        cos(z_i, z'_i); ``negative_cosines`` ``(sum b(b-1),)``: cos(z_i, z'_j), i != j, within each batch of b.
    """
    check_compatible(backbone, dataset)
    if n < 2:
        raise EvaluationError(f"n must be at least 2 (negative pairs need two images), got {n}")
    device = next(backbone.parameters()).device
    loader = BatchLoader(dataset, batch_size, shuffle=True, drop_last=False, seed=seed, device=device,
                         num_workers=num_workers)
    views, modes = MultiView(augment, 2), (backbone.training, head.training)
    backbone.eval()
    head.eval()
    norms, positives, negatives, taken = [], [], [], 0
    try:
        for step, (images, _) in enumerate(loader):
            images = images[: n - taken]
            z0, z1 = (head(backbone(view)).float() for view in views(images, seed=seed * 1_000_003 + step))
            cosines = F.normalize(z0, dim=1) @ F.normalize(z1, dim=1).T
            different = ~torch.eye(len(images), dtype=torch.bool, device=device)
            norms += [torch.linalg.vector_norm(z, dim=1).cpu() for z in (z0, z1)]
            positives.append(cosines.diagonal().cpu())
            negatives.append(cosines[different].cpu())
            taken += len(images)
            if taken >= n:
                break
    finally:
        backbone.train(modes[0])
        head.train(modes[1])
    return {"norms": torch.cat(norms), "positive_cosines": torch.cat(positives),
            "negative_cosines": torch.cat(negatives)}


def summarize(samples: Dict[str, Tensor]) -> Dict[str, float]:
    """Mean, std (and std/mean of the norms) of :func:`projection_samples`' values, as plain floats."""
    norms, positives, negatives = (samples[k].double() for k in ("norms", "positive_cosines", "negative_cosines"))
    return {
        "n_images": len(positives),
        "norm_mean": norms.mean().item(),
        "norm_std": norms.std().item(),
        "norm_std_over_mean": (norms.std() / norms.mean()).item(),
        "norm_min": norms.min().item(),
        "norm_max": norms.max().item(),
        "positive_cosine_mean": positives.mean().item(),
        "positive_cosine_std": positives.std().item(),
        "negative_cosine_mean": negatives.mean().item(),
        "negative_cosine_std": negatives.std().item(),
        "cosine_gap": (positives.mean() - negatives.mean()).item(),
    }


def norm_diagnostics(backbone: nn.Module, head: nn.Module, dataset: Any, augment: nn.Module, n: int = 1024, *,
                     batch_size: int = 256, seed: int = 0, num_workers: Optional[int] = None) -> Dict[str, float]:
    """:func:`summarize` of :func:`projection_samples`: the figures without the raw values."""
    return summarize(projection_samples(backbone, head, dataset, augment, n, batch_size=batch_size, seed=seed,
                                        num_workers=num_workers))


def save_histograms(samples: Dict[str, Tensor], directory: Union[str, Path], title: str = "",
                    suffix: str = "") -> List[Path]:
    """Write ``projection_norms{suffix}.png`` and ``pair_cosines{suffix}.png`` (positive vs negative pairs) into
    ``directory``."""
    Figure = matplotlib_figure()
    directory = Path(directory)
    paths = [directory / _suffixed(HISTOGRAMS["norms"], suffix), directory / _suffixed(HISTOGRAMS["cosines"], suffix)]
    figure = Figure(figsize=(5, 3.5), layout="constrained")
    axes = figure.subplots()
    axes.hist(samples["norms"].numpy(), bins=60, color="tab:blue")
    axes.set(xlabel="||z|| before normalization", ylabel="views", title=f"projection norms {title}".strip())
    figure.savefig(paths[0], dpi=120)
    figure = Figure(figsize=(5, 3.5), layout="constrained")
    axes = figure.subplots()
    both = torch.cat([samples["negative_cosines"], samples["positive_cosines"]])
    low, high = both.min().item(), max(both.max().item(), both.min().item() + 1e-3)
    edges = torch.linspace(low, high, 61).numpy()  # shared bins, zoomed to the data (collapsed runs sit near 1)
    for key, label, color in (("negative_cosines", "negative pairs", "tab:red"),
                              ("positive_cosines", "positive pairs", "tab:green")):
        axes.hist(samples[key].numpy(), bins=edges, density=True, alpha=0.6, label=label, color=color)
    axes.set(xlabel="cosine similarity", ylabel="density", title=f"pair cosines {title}".strip())
    axes.legend()
    figure.savefig(paths[1], dpi=120)
    return paths


def _suffixed(name: str, suffix: str) -> str:
    stem, dot, extension = name.rpartition(".")
    return f"{stem}{suffix}{dot}{extension}"


def matplotlib_figure() -> Any:
    """matplotlib's ``Figure`` class, or an :class:`EvaluationError` that says how to install it."""
    # pyplot is never imported: a bare Figure renders PNGs with Agg and leaves the user's backend alone.
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise EvaluationError("the histograms need matplotlib: pip install 'sslsec[plots]'") from None
    return Figure


def diagnose_run(run_dir: Union[str, Path], overrides: Sequence[str] = (), *, n: int = 1024,
                 device: Optional[Union[str, torch.device]] = None, overwrite: bool = False) -> Dict[str, Any]:
    """Norm diagnostics of a pretraining run on its test split, through the run's own view recipe (the method's
    preset with its ``augment`` section); ``trainer.seed`` picks the images and the views. Writes the PNGs and
    ``diagnostics_seed{seed}.json`` into the run directory, each name with the seed (``projection_norms_seed1.png``),
    so that diagnostics of other seeds sit beside them. A file of the seed that holds the diagnostics of other
    settings (``n``, the data or view keys) is a :class:`~sslsec.runs.RunError` before the work, unless
    ``overwrite``."""
    matplotlib_figure()  # fail before the work, not after it
    config, backbone = load_run(run_dir, overrides)
    seed = config.trainer.seed
    suffix = f"_seed{seed}"
    path, protocol = Path(run_dir) / f"diagnostics{suffix}.json", scores_protocol(config, RunPaths(run_dir).backbone,
                                                                                  n=n)
    if not overwrite:
        check_scores_file(path, protocol, "pass another trainer.seed to keep both, or --overwrite to replace it")
    head = load_sec_head(run_dir, config, backbone.feature_dim)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone, head = backbone.to(device), head.to(device)
    test = load_split(config, "test")
    samples = projection_samples(backbone, head, test, build_augment(config, test), n, seed=seed,
                                 num_workers=config.data.num_workers)
    result = {"method": config.method, "dataset": test.name, "sec_weight": config.loss.sec_weight,
              "seed": seed, **summarize(samples)}
    paths = save_histograms(samples, run_dir, title=f"({config.method}, {test.name}, seed {seed})", suffix=suffix)
    result["histograms"] = [path.name for path in paths]
    result["json"] = path.name
    write_scores(path, result, protocol)
    return result
