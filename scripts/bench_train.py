"""Training throughput of one config: the model alone, the sslsec step, and a lightly-style loop.

(a) model only: the config's method (backbone, head, WithSEC(NTXentLoss)) on resident, pre-made views: forward,
    backward, optimizer step. The ceiling of what any data path can reach.
(b) sslsec: the trainer's own step on uint8 batches held on the device: the method's ``before_step`` hook,
    views made by kornia (``MultiView`` of the config's ``augment`` recipe), then
    :func:`sslsec.engine.trainer.train_step` and the non-finite watch.
(c) lightly-style: lightly's ``SimCLRTransform`` with the same recipe on PIL images in a torch DataLoader with
    ``--workers`` worker processes (what users of lightly write), feeding the same model, precision and
    memory layout through the same ``train_step``.
(d) with ``--folder DIR``: the sslsec step on the same images read from a JPEG ImageFolder ``DIR/train/<class>/``
    by the trainer's own :class:`~sslsec.data.BatchLoader` with ``--workers`` DataLoader workers (decoded by the
    workers on a CPU, by nvJPEG on a GPU): the folder path's cost beside the in-memory one. If ``DIR/train`` does
    not exist, the config's training images are written there as JPEGs (quality 90, RGB) first; the images of
    (a)-(c) are then those JPEGs decoded once, so all four see the same pixels, channels and model. Each pass of
    (d) starts its workers afresh, as every epoch of the trainer does.

The three are measured alternately ``--repeats`` times in one run and their medians compared, so load from
other processes hits all of them alike. Speeds are training images per second (two views each)::

    python scripts/bench_train.py --config configs/simclr_fmnist.yaml --steps 30 --repeats 3
    python scripts/bench_train.py --config configs/simclr_cifar10.yaml --device cuda --workers 8 data.download=true
    python scripts/bench_train.py --config configs/simclr_cifar10.yaml --folder /tmp/cifar_jpeg --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from sslsec.cli import EXIT_INTERRUPTED, user_errors
from sslsec.config import load_config  # torch and the rest are imported after the arguments are parsed


def lightly_transform(config, dataset, augment):
    """lightly's SimCLRTransform with the recipe of sslsec's ``augment`` (colour ops off for grayscale, as sslsec
    does)."""
    from lightly.transforms import SimCLRTransform

    from sslsec.methods import view_size

    recipe, color = config.augment, dataset.channels == 3
    return SimCLRTransform(
        input_size=view_size(config, dataset), cj_prob=augment.jitter_prob, cj_strength=1.0,
        cj_bright=recipe.brightness, cj_contrast=recipe.contrast, cj_sat=recipe.saturation if color else 0.0,
        cj_hue=recipe.hue if color else 0.0, min_scale=augment.crop_scale[0],
        random_gray_scale=augment.grayscale_prob if color else 0.0, gaussian_blur=augment.blur_prob,
        hf_prob=recipe.hflip_prob,
        normalize={"mean": list(dataset.mean), "std": list(dataset.std)},
    )


def jpeg_folder(dataset, root: Path):
    """``dataset`` as a JPEG ImageFolder ``root/train/class_<label>/<index>.JPEG`` (written once, RGB), read back."""
    from torchvision.io import encode_jpeg

    from sslsec.data import ImageFolderDataset

    train = root / "train"
    if not train.is_dir():
        for index, (image, label) in enumerate(zip(dataset.images, dataset.labels.tolist())):
            folder = train / f"class_{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            rgb = image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image
            (folder / f"{index:06d}.JPEG").write_bytes(encode_jpeg(rgb, quality=90).numpy().tobytes())
    return ImageFolderDataset(root, "train", image_size=dataset.image_size)


def decoded(folder):
    """Every image of ``folder`` decoded once into memory: the in-memory twin of the folder path."""
    import torch

    from sslsec.data import ImageArrays

    images = torch.stack([folder[index][0] for index in range(len(folder))])
    return ImageArrays(images, folder.labels, folder.classes, folder.mean, folder.std, f"{folder.name} (decoded)")


def _timed(run_steps, steps: int, batch_size: int, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run_steps()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def _progress(message: str) -> None:
    """A line on stderr while measuring, so stdout keeps only the results."""
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    """Parse, then measure; Ctrl-C or a user error stops it with one line (exit code 130 or 2), as the sslsec
    commands."""
    args = _parser().parse_intermixed_args()
    try:
        measure(args)
    except KeyboardInterrupt:
        print("bench_train.py: stopped by Ctrl-C before its table was printed", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        print(f"bench_train.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/simclr_fmnist.yaml"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default 30)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers of the lightly-style loop and of the folder loader (default: "
                        "min(8, cores))")
    parser.add_argument("--folder", type=Path, metavar="DIR",
                        help="also time (d), the same images from a JPEG ImageFolder DIR (written if DIR/train is "
                        "missing)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def measure(args: argparse.Namespace) -> None:
    """Run the three loops alternately and print their medians and ratios."""
    import torch
    from bench_augment import PILImages  # this folder is on sys.path when a script in it runs

    from sslsec.augment import MultiView
    from sslsec.data import BatchLoader, load_split
    from sslsec.engine.accelerator import make_accelerator
    from sslsec.engine.precision import cpu_description
    from sslsec.engine.trainer import NonFiniteWatch, build_optimizer, train_step
    from sslsec.methods import build_augment, build_method

    config = load_config(args.config, args.overrides)
    accelerator = make_accelerator(mixed_precision=config.trainer.mixed_precision, cpu=args.device == "cpu")
    device, batch_size = accelerator.device, config.trainer.batch_size
    print(f"{args.config}: {config.method}, {config.model.backbone}, batch {batch_size}, "
          f"{accelerator.mixed_precision} precision, channels_last={config.trainer.channels_last}, "
          f"device {device}, {torch.get_num_threads()} threads, {args.steps} steps x {args.repeats} repeats, "
          f"torch {torch.__version__}")
    print(f"CPU: {cpu_description()}; precision: {accelerator.precision_reason}", flush=True)
    dataset = load_split(config, "train")
    needed = (args.steps + 2) * batch_size
    dataset = dataset.subset(torch.arange(min(needed, len(dataset))))
    folder = None
    if args.folder is not None:
        folder = jpeg_folder(dataset, args.folder)
        folder = folder.subset(torch.arange(min(needed, len(folder))))
        dataset = decoded(folder)

    torch.manual_seed(0)
    memory_format = torch.channels_last if config.trainer.channels_last else torch.contiguous_format
    model = build_method(config, dataset.channels).to(memory_format=memory_format)
    optimizer = build_optimizer(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    core.criterion.check_finite = False
    model.train()
    views = MultiView(build_augment(config, dataset, channels_last=config.trainer.channels_last))
    loader = BatchLoader(dataset, batch_size, shuffle=True, drop_last=True, device=device)
    batches = [images for images, _ in loader][: args.steps]
    premade = [views(images) for images in batches]
    watch = NonFiniteWatch(accelerator)
    lightly_loader = torch.utils.data.DataLoader(
        PILImages(dataset.images, lightly_transform(config, dataset, views.augment)),
        batch_size=batch_size, shuffle=True,
        num_workers=args.workers, persistent_workers=args.workers > 0, drop_last=True,
        pin_memory=device.type == "cuda")

    def model_only():
        for made in premade:
            train_step(accelerator, model, optimizer, made)

    def sslsec_step():
        for step, images in enumerate(batches):
            core.before_step(step, len(batches))
            watch.record(train_step(accelerator, model, optimizer, views(images)).total, step)

    if folder is not None:
        folder_loader = BatchLoader(folder, batch_size, shuffle=True, drop_last=True, device=device,
                                    num_workers=args.workers)

    def sslsec_folder():
        for step, (images, _) in enumerate(folder_loader):
            if step == args.steps:
                break
            core.before_step(step, args.steps)
            watch.record(train_step(accelerator, model, optimizer, views(images)).total, step)

    def lightly_style():
        for step, pair in enumerate(lightly_loader):
            if step == args.steps:
                break
            made = [v.to(device, non_blocking=True).contiguous(memory_format=memory_format) for v in pair]
            train_step(accelerator, model, optimizer, made)

    names = ("(a) model only, pre-made views", "(b) sslsec step: uint8 -> kornia views -> step",
             f"(c) lightly-style: PIL + DataLoader({args.workers} workers)")
    runs = (model_only, sslsec_step, lightly_style)
    if folder is not None:
        names += (f"(d) sslsec step, JPEG folder ({args.workers} workers)",)
        runs += (sslsec_folder,)
    start = time.perf_counter()
    for name, run in zip(names, runs):  # warm-up: allocator, autocast caches, worker start-up
        run()
        _progress(f"warm-up {name[:3]} done ({time.perf_counter() - start:.0f} s)")
    speeds = [[] for _ in runs]
    for repeat in range(args.repeats):
        for run, measured in zip(runs, speeds):
            measured.append(_timed(run, args.steps, batch_size, device))
        _progress(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
            f"{name[:3]} {measured[-1]:.0f}" for name, measured in zip(names, speeds))
            + f" img/s ({time.perf_counter() - start:.0f} s)")
    medians = [statistics.median(measured) for measured in speeds]

    for name, median, measured in zip(names, medians, speeds):
        print(f"{name:<50}: {median:7.0f} img/s [{', '.join(f'{v:.0f}' for v in measured)}]")
    print(f"step time of (b) over (a): {medians[0] / medians[1]:.2f}x   (the data path's cost)")
    print(f"speed of (b) over (c)    : {medians[1] / medians[2]:.2f}x")
    if folder is not None:
        print(f"speed of (d) over (b)    : {medians[3] / medians[1]:.2f}x   (JPEG folder against in-memory; "
              f"{len(folder)} images in {args.folder})")
    watch.check(len(batches))


if __name__ == "__main__":
    main()
