"""Throughput of sslsec's batched kornia views against lightly's per-image SimCLRTransform.

(a) sslsec: ``MultiView(SimCLRAugment)`` on uint8 batches already in memory (as the trainer feeds it),
    on ``--device`` with ``--workers`` torch threads.
(b) baseline: ``lightly.transforms.SimCLRTransform`` on PIL images in a torch DataLoader with ``--workers``
    worker processes, the same recipe (jitter 0.4/0.4/0.4/0.1 with p=0.8, grayscale 0.2, no blur at 32 px).

Both make two views per image from the same uint8 images. The two are measured alternately ``--repeats``
times in one run and the medians compared, so load from other processes hits both alike.

    python scripts/bench_augment.py --size 32 --batch-size 512 --batches 20 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from PIL import Image

from sslsec.augment import MultiView, SimCLRAugment
from sslsec.engine.precision import cpu_description

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class PILImages(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) images served as PIL images through ``transform``, as users of lightly do."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images = images.permute(0, 2, 3, 1).squeeze(-1).numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_sslsec(images: torch.Tensor, batch_size: int, batches: int, device: torch.device) -> float:
    """Images per second (two views each) of MultiView(SimCLRAugment) on ``device``."""
    augment = MultiView(SimCLRAugment(images.shape[-1], MEAN, STD)).to(device)
    images = images.to(device)
    augment(images[:batch_size])  # warm-up
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for b in range(1, batches + 1):
            augment(images[b * batch_size:(b + 1) * batch_size])
    _sync(device)
    return batches * batch_size / (time.perf_counter() - start)


def make_lightly_loader(images: torch.Tensor, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    from lightly.transforms import SimCLRTransform

    transform = SimCLRTransform(
        input_size=images.shape[-1], cj_strength=0.5, min_scale=0.08, gaussian_blur=0.0,
        normalize={"mean": list(MEAN), "std": list(STD)},
    )
    return torch.utils.data.DataLoader(PILImages(images, transform), batch_size=batch_size,
                                       num_workers=workers, persistent_workers=workers > 0, drop_last=True)


def bench_lightly(loader: torch.utils.data.DataLoader) -> float:
    """Images per second (two views each) of lightly's SimCLRTransform in a DataLoader."""
    iterator = iter(loader)
    next(iterator)  # warm-up: the workers are running and the prefetch queue fills
    start, count = time.perf_counter(), 0
    for views in iterator:  # runs the epoch out, so no worker is still busy during (a)
        count += len(views[0])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(max(1, args.workers))
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, ((args.batches + 1) * args.batch_size, 3, args.size, args.size),
                           dtype=torch.uint8, generator=generator)
    loader = make_lightly_loader(images, args.batch_size, args.workers)
    ours, baseline = [], []
    for _ in range(args.repeats):
        ours.append(bench_sslsec(images, args.batch_size, args.batches, device))
        baseline.append(bench_lightly(loader))
    a, b = statistics.median(ours), statistics.median(baseline)
    print(f"size {args.size}px, batch {args.batch_size}, {args.batches} batches x {args.repeats} repeats, "
          f"{args.workers} workers/threads, device {device}, torch {torch.__version__}")
    print(f"CPU: {cpu_description()}")
    print(f"(a) sslsec MultiView(SimCLRAugment), uint8 in memory : {a:9.0f} images/s (2 views) "
          f"[{', '.join(f'{v:.0f}' for v in ours)}]")
    print(f"(b) lightly SimCLRTransform + DataLoader              : {b:9.0f} images/s (2 views) "
          f"[{', '.join(f'{v:.0f}' for v in baseline)}]")
    print(f"ratio a/b: {a / b:.2f}x")


if __name__ == "__main__":
    main()
