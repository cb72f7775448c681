"""Batched image augmentation on any device, built from kornia containers.

Every pipeline takes a batch of images as stored by :mod:`sslsec.data` -- uint8 ``(N, C, H, W)`` in
[0, 255], or float in [0, 1] -- on the device it lives on, and returns normalized float views there.
Nothing loops over images in Python: kornia samples one set of random parameters per image and applies
them to the whole batch at once (crop + resize is a single batched ``grid_sample``). The contrastive presets
make all the views of a batch at once (:meth:`AugmentPipeline.views`): kornia's modules draw the parameters,
one ``grid_sample`` crops, resizes and mirrors every view, and the colour steps run on whole views, which on
small images saves most of kornia's per-call cost; the views are distributed as the kornia pipeline's
(tests/test_augment.py compares the two).

Randomness goes through torch's global generators (kornia has no per-module generator). Pass ``seed=``
to any ``forward`` or ``views`` to draw from a private, seeded copy instead: the output is then reproducible
and the global random state is left untouched. The contrastive presets draw on the images' device, with its
generator, and read nothing back: on a GPU, making the views never waits for it.

Example::

    augment = MultiView(SimCLRAugment(32, mean=CIFAR10_MEAN, std=CIFAR10_STD))
    view_1, view_2 = augment(images_uint8)          # 2 x (N, 3, 32, 32) float32
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.enhance import adjust_hue
from kornia.filters import filter2d_separable, get_gaussian_kernel1d
from torch import Tensor, nn
from torchvision.transforms.v2.functional import to_dtype

__all__ = [
    "AugmentPipeline",
    "ContrastiveAugment",
    "SimCLRAugment",
    "MoCoV2Augment",
    "MetricAugment",
    "ProbeAugment",
    "EvalTransform",
    "MultiView",
    "seeded",
]

Size = int | tuple[int, int]


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Draw random numbers from a private copy of the CPU (and ``device``'s) generator seeded with ``seed``.

    The global generators are restored on exit, so seeding one call never changes what the next unseeded
    call draws. ``seed=None`` is a no-op: the global generators are used as they are.
    """
    if seed is None:
        yield
        return
    device = torch.device(device)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        for cuda_device in cuda_devices:
            with torch.cuda.device(cuda_device):
                torch.cuda.manual_seed(seed)
        yield


def _is_size(size: object) -> bool:
    """An int, or a pair of ints (not a mean/std tuple of floats passed where the size goes)."""
    if isinstance(size, bool):
        return False
    if isinstance(size, int):
        return True
    return (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in size))


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def sample_crop_boxes(n: int, image_size: tuple[int, int], scale: tuple[float, float],
                      ratio: tuple[float, float], tries: int = 10, device: torch.device | str | None = None) -> Tensor:
    """``n`` random resized crop boxes, drawn as torchvision's and kornia's ``RandomResizedCrop`` draw them.

    Each box takes the first of ``tries`` draws (area a fraction uniform in ``scale`` of the image, log aspect ratio
    uniform in ``log(ratio)``, sides rounded) that fits in the image, else the whole image cut to the nearest
    aspect ratio in ``ratio``; its position is uniform over the integer offsets. kornia draws the same in ~140
    small tensor ops, which cost more than the crops themselves on small images; this takes ~15.

    Drawn by ``device``'s generator, there (default: the CPU), so that boxes for images on a GPU need no copy.

    Shapes: output ``(n, 4)`` float32, ``(x_first, y_first, x_last, y_last)`` pixel coordinates.
    """
    height, width = image_size
    area = torch.empty(n, tries, device=device).uniform_(*scale) * (height * width)
    aspect = torch.empty(n, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    box_width, box_height = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    fits = (box_width >= 1) & (box_width <= width) & (box_height >= 1) & (box_height <= height)
    first = fits.byte().argmax(dim=1, keepdim=True)  # argmax returns the first of equal maxima
    found = fits.any(dim=1)
    box_width = torch.where(found, box_width.gather(1, first)[:, 0], min(width, round(height * max(ratio))))
    box_height = torch.where(found, box_height.gather(1, first)[:, 0], min(height, round(width / min(ratio))))
    # float64: a float32 draw just below 1 times the extent would round up to the extent itself
    extent = torch.stack([width - box_width + 1, height - box_height + 1], 1)
    offsets = torch.rand(n, 2, dtype=torch.float64, device=device) * extent
    first_pixel = offsets.floor().float()
    return torch.cat([first_pixel, first_pixel + torch.stack([box_width, box_height], 1) - 1], dim=1)


def resized_crops(images: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Several crops of every image, each resized to ``size`` by bilinear interpolation, in one ``grid_sample``.

    ``boxes[v, i]`` is ``(x_first, y_first, x_last, y_last)``: the pixel coordinates that the first and the last
    column and row of view ``v`` of image ``i`` sample (the corners, as kornia's ``RandomResizedCrop(cropping_mode=
    "resample")`` maps them); ``x_first > x_last`` mirrors the crop. The views of an image are sampled from it
    stacked along the height, so the batch is never repeated.

    Shapes: images ``(N, C, H, W)`` float, boxes ``(V, N, 4)`` (on the images' device: else copied there); output
    ``(V, N, C, h, w)``.
    """
    n_views, n_images = boxes.shape[:2]
    (height, width), (out_height, out_width) = images.shape[-2:], size
    # grid_sample's coordinates with align_corners=True: -1 and 1 are the centres of the edge pixels.
    boxes = boxes.transpose(0, 1).to(images.device, images.dtype)  # (N, V, 4)
    x = boxes[..., 0::2] * (2 / max(width - 1, 1)) - 1  # (N, V, 2): the first and the last column
    y = boxes[..., 1::2] * (2 / max(height - 1, 1)) - 1
    x = torch.lerp(x[..., :1], x[..., 1:], torch.linspace(0, 1, out_width, device=images.device))
    y = torch.lerp(y[..., :1], y[..., 1:], torch.linspace(0, 1, out_height, device=images.device))
    grid = torch.stack(torch.broadcast_tensors(x[..., None, :], y[..., :, None]), dim=-1)  # (N, V, h, w, 2)
    grid = grid.view(n_images, n_views * out_height, out_width, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.unflatten(2, (n_views, out_height)).permute(2, 0, 1, 3, 4)


# kornia's ColorJitter parameters, by their index in its random order of the steps, and their neutral values
_JITTER_FACTORS = (("brightness_factor", 1.0), ("contrast_factor", 1.0), ("saturation_factor", 1.0),
                   ("hue_factor", 0.0))


def color_jitter_(images: Tensor, params: dict[str, Tensor]) -> Tensor:
    """In place, kornia's ``ColorJitter`` with the parameters its ``forward_parameters`` drew: torchvision's
    formulas, the steps in the drawn order, each clamped to [0, 1].

    kornia cuts the images whose ``batch_prob`` is set out of the batch and writes them back; here every image
    goes through each step and the others get the neutral factor, which leaves them exactly as they were (the
    hue step, whose round trip through HSV is not exact, keeps them by ``torch.where``). Working in place on
    the whole batch allocates no new image tensors: on small images, fresh tensors cost more than the arithmetic.
    A step whose factor ``params`` leaves out is skipped (a strength of 0, for which kornia draws the neutral
    factor), as are saturation and hue on single-channel images. Nothing is read back from the images' device: only
    the order, which kornia draws on the CPU.

    Shapes: images ``(N, C, h, w)`` float in [0, 1], C = 1 or 3; every parameter ``(N,)``.
    """
    applied = params["batch_prob"].bool()
    images.clamp_(0, 1)
    for index in params["order"].tolist():
        name, neutral = _JITTER_FACTORS[index]
        if name not in params or (name in ("saturation_factor", "hue_factor") and images.shape[1] != 3):
            continue
        factor = torch.where(applied, params[name], neutral).to(images.device, images.dtype).view(-1, 1, 1, 1)
        if name == "brightness_factor":
            images.mul_(factor).clamp_(0, 1)
        elif name == "contrast_factor":  # blend with the mean intensity of the image
            gray = rgb_to_grayscale(images) if images.shape[1] == 3 else images
            _blend_(images, factor, gray.mean((-3, -2, -1), keepdim=True))
        elif name == "saturation_factor":  # blend with the grayscale image
            _blend_(images, factor, rgb_to_grayscale(images))
        else:
            shifted = adjust_hue(images, factor * (2 * math.pi))
            images.copy_(torch.where(applied.to(images.device).view(-1, 1, 1, 1), shifted, images))
    return images


def _blend_(images: Tensor, factor: Tensor, other: Tensor) -> Tensor:
    """In place, ``factor * images + (1 - factor) * other`` clamped to [0, 1] (torchvision's ``_blend``)."""
    return images.mul_(factor).add_(other * (1 - factor)).clamp_(0, 1)


def gaussian_blur(images: Tensor, blur: K.RandomGaussianBlur) -> Tensor:
    """kornia's ``RandomGaussianBlur`` (the parameters drawn by its ``forward_parameters``, the same separable
    kernels, border and per-image sigma), blurring the whole batch and keeping the images it does not apply to by
    ``torch.where``. kornia's ``gaussian_blur2d`` reads every sigma back to check that it is positive, which on a GPU
    waits for it; these are positive by construction, drawn from the module's range.

    Shapes: images ``(N, C, h, w)`` float -> the same.
    """
    params = blur.forward_parameters(images.shape)
    kernel = get_gaussian_kernel1d(blur.flags["kernel_size"], params["sigma"][:, None])
    blurred = filter2d_separable(images, kernel, kernel, blur.flags["border_type"].name.lower())
    return torch.where(params["batch_prob"].bool().view(-1, 1, 1, 1), blurred, images)


class AugmentPipeline(nn.Module):
    """A kornia ``ImageSequential`` of ``transforms`` followed by normalization with ``mean``/``std``.

    Args:
        transforms: kornia augmentations applied in order to float images in [0, 1].
        mean, std: per-channel statistics of the data set in [0, 1] units; their length is the number of
            channels the pipeline accepts.
        channels_last: return views in ``torch.channels_last`` memory format.
        dtype: floating dtype of the returned views (e.g. ``torch.bfloat16`` for a bf16 model). The
            augmentation itself runs in float32.

    Shapes:
        input ``(N, C, H, W)`` uint8 in [0, 255] or float in [0, 1]; output ``(N, C, h, w)`` ``dtype``.
    """

    def __init__(
        self,
        transforms: Sequence[nn.Module],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) == 0 or len(mean) != len(std):
            raise ValueError(f"mean {mean} and std {std} must be non-empty and of equal length (one per channel)")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype such as torch.float32 or torch.bfloat16, got {dtype}")
        self.mean, self.std = mean, std
        self.channels_last, self.dtype = channels_last, dtype
        self.transforms = K.ImageSequential(*transforms, K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)))

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_unit_float(self, images: Tensor) -> Tensor:
        """Check a batch at the boundary and return it as float32 in [0, 1] (no copy if it already is)."""
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"expected a batch of images (N, C, H, W), got {shape}; add a batch dimension "
                             "with images.unsqueeze(0)")
        if images.shape[1] != self.channels:
            raise ValueError(f"images have {images.shape[1]} channels (shape {tuple(images.shape)}) but mean/std "
                             f"have {self.channels}; build the augmentation with the data set's mean and std")
        if images.dtype == torch.uint8:
            return to_dtype(images, torch.float32, scale=True)
        if images.dtype.is_floating_point:
            return images.float()
        raise ValueError(f"expected uint8 images in [0, 255] or float images in [0, 1], got dtype {images.dtype}")

    def forward(self, images: Tensor, seed: int | None = None) -> Tensor:
        """Augment and normalize one view of every image; ``seed`` makes the draw reproducible."""
        return self.views(images, 1, seed)[0]

    def views(self, images: Tensor, n_views: int = 2, seed: int | None = None) -> list[Tensor]:
        """``n_views`` independent views of every image (one random draw each); ``seed`` makes them reproducible.

        Shapes: input ``(N, C, H, W)``; output a list of ``n_views`` tensors ``(N, C, h, w)`` of ``dtype``.
        """
        if n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {n_views}")
        unit = self.to_unit_float(images)
        with seeded(seed, unit.device):
            views = self.draw_views(unit, n_views)
        return [view.to(dtype=self.dtype, memory_format=self.memory_format) for view in views]

    def draw_views(self, unit: Tensor, n_views: int) -> list[Tensor]:
        """The views of float images in [0, 1], normalized: the kornia pipeline once per view."""
        return [self.transforms(unit) for _ in range(n_views)]


class ContrastiveAugment(AugmentPipeline):
    """The SimCLR / MoCo v2 view recipe: crop, flip, colour jitter, grayscale, blur, normalize.

    Random resized crop to ``size`` (area fraction ``crop_scale``, aspect ratio ``crop_ratio``), horizontal flip
    with ``hflip_prob``, torchvision-style colour jitter (``brightness``, ``contrast``, ``saturation``, ``hue``,
    random order) with ``jitter_prob``, grayscale with ``grayscale_prob``, Gaussian blur with ``blur_prob``
    (sigma uniform in ``blur_sigma``; kernel ``blur_kernel_size``, default about 10% of ``size``, odd), then
    normalization. Set a probability to 0 to switch its op off.

    ``blur_prob=None`` picks the published choice by size: 0.5 for ImageNet-like inputs (``size >= 96``),
    off for small images (32 px CIFAR), where blurring removes most of the signal (SimCLR, Appendix B.9).

    Grayscale data (``len(mean) == 1``): jitter changes only brightness and contrast and the grayscale op
    is left out.
    """

    def __init__(
        self,
        size: Size,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip_prob: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        height, width = _pair(size)
        color = len(tuple(mean)) == 3
        if blur_prob is None:
            blur_prob = 0.5 if min(height, width) >= 96 else 0.0
        if blur_kernel_size is None:
            blur_kernel_size = 2 * int(0.05 * min(height, width)) + 1
        if blur_kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel_size must be odd, got {blur_kernel_size}")
        # "resample" crops with one batched grid_sample; kornia's default "slice" loops over images.
        ops: dict[str, nn.Module] = {
            "crop": K.RandomResizedCrop((height, width), scale=crop_scale, ratio=crop_ratio, cropping_mode="resample"),
        }
        if hflip_prob > 0:
            ops["flip"] = K.RandomHorizontalFlip(p=hflip_prob)
        if jitter_prob > 0:
            saturation, hue = (saturation, hue) if color else (0.0, 0.0)
            ops["jitter"] = K.ColorJitter(brightness, contrast, saturation, hue, p=jitter_prob)
        if grayscale_prob > 0 and color:
            ops["grayscale"] = K.RandomGrayscale(p=grayscale_prob)
        if blur_prob > 0:
            ops["blur"] = K.RandomGaussianBlur(blur_kernel_size, blur_sigma, p=blur_prob)
        super().__init__(list(ops.values()), mean, std, channels_last=channels_last, dtype=dtype)
        self.ops, self.size = ops, (height, width)  # the modules of `transforms` by name, for draw_views
        # The recipe in force (the presets' defaults resolved), for whoever rebuilds it elsewhere (bench_train.py).
        self.crop_scale, self.crop_ratio, self.hflip_prob = tuple(crop_scale), tuple(crop_ratio), hflip_prob
        self.jitter_prob, self.grayscale_prob, self.blur_prob = jitter_prob, grayscale_prob, blur_prob
        # The jitter's steps of strength 0 (kornia draws their neutral factor), which color_jitter_ skips.
        self.jitter_off = {name for (name, _), strength in zip(_JITTER_FACTORS, (brightness, contrast, saturation, hue))
                           if strength == 0}
        self._normalization: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def draw_views(self, unit: Tensor, n_views: int) -> list[Tensor]:
        """All views at once, distributed as the kornia pipeline's (``transforms``, the reference the tests compare
        with): the crop boxes and flips of every view drawn together (:func:`sample_crop_boxes`) and applied by one
        ``grid_sample``; the colour ops' parameters drawn by their kornia modules once per view (so each view has
        its own random order of the jitter's steps, as a separate kornia call has), the jitter and the blur applied to
        whole views, without cutting out the images they apply to. All is drawn on the images' device by its
        generator and nothing is read back from it: on a GPU, making the views never waits for it."""
        n_images, device = len(unit), unit.device
        mean, std = self._on_device(device)
        boxes = sample_crop_boxes(n_views * n_images, unit.shape[-2:], self.crop_scale, self.crop_ratio, device=device)
        flipped = torch.rand(len(boxes), device=device) < self.hflip_prob
        x_first, y_first, x_last, y_last = boxes.unbind(1)  # a mirrored view samples the columns right to left:
        boxes = torch.stack([torch.where(flipped, x_last, x_first), y_first, torch.where(flipped, x_first, x_last),
                             y_last], dim=1)
        views = resized_crops(unit, boxes.view(n_views, n_images, 4), self.size)
        out = []
        for view in views:
            view = view.contiguous(memory_format=self.memory_format)  # its own copy: the steps below work in place
            if "jitter" in self.ops:
                params = self.ops["jitter"].forward_parameters(view.shape)
                color_jitter_(view, {key: value for key, value in params.items() if key not in self.jitter_off})
            if "grayscale" in self.ops:
                view = self.ops["grayscale"](view)
            if "blur" in self.ops:
                view = gaussian_blur(view, self.ops["blur"])
            out.append(view.sub_(mean).div_(std))
        return out

    def _on_device(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The mean and std as ``(C, 1, 1)`` tensors on ``device``, made once per device, and the colour ops switched to
        drawing their parameters there, by its generator: kornia draws them on the CPU, and every step would copy them,
        and the mean and std, to a GPU (``torch.tensor(mean, device=...)`` waits for it)."""
        for name in ("jitter", "grayscale", "blur"):
            if name in self.ops and self.ops[name].device != device:
                self.ops[name].set_rng_device_and_dtype(device, torch.float32)
        if device not in self._normalization:
            self._normalization[device] = tuple(torch.tensor(values, device=device).view(-1, 1, 1)
                                                for values in (self.mean, self.std))
        return self._normalization[device]


class SimCLRAugment(ContrastiveAugment):
    """SimCLR views (Chen et al. 2020): :class:`ContrastiveAugment` with ``crop_scale=(0.08, 1.0)``.

    The jitter defaults (0.4, 0.4, 0.4, 0.1) are SimCLR's colour strength 0.5 used for CIFAR; its ImageNet
    runs used strength 1.0: ``brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2``.
    """


class MoCoV2Augment(ContrastiveAugment):
    """MoCo v2 views (Chen et al. 2020, "Improved Baselines"): :class:`ContrastiveAugment` with
    ``crop_scale=(0.2, 1.0)``; every other keyword is passed through."""

    def __init__(self, size: Size, mean: Sequence[float], std: Sequence[float], *,
                 crop_scale: tuple[float, float] = (0.2, 1.0), **kwargs) -> None:
        super().__init__(size, mean, std, crop_scale=crop_scale, **kwargs)


class MetricAugment(ContrastiveAugment):
    """The SEC authors' metric-learning view: random resized crop (``crop_scale=(0.16, 1.0)``) and horizontal flip,
    no colour jitter, grayscale or blur (each can be switched on by its keyword)."""

    def __init__(self, size: Size, mean: Sequence[float], std: Sequence[float], *,
                 crop_scale: tuple[float, float] = (0.16, 1.0), jitter_prob: float = 0.0,
                 grayscale_prob: float = 0.0, blur_prob: float | None = 0.0, **kwargs) -> None:
        super().__init__(size, mean, std, crop_scale=crop_scale, jitter_prob=jitter_prob,
                         grayscale_prob=grayscale_prob, blur_prob=blur_prob, **kwargs)


class ProbeAugment(AugmentPipeline):
    """Linear-probe training augmentation: random resized crop, horizontal flip, normalize."""

    def __init__(
        self,
        size: Size,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        hflip_prob: float = 0.5,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        transforms = [
            K.RandomResizedCrop(_pair(size), scale=crop_scale, cropping_mode="resample"),
            K.RandomHorizontalFlip(p=hflip_prob),
        ]
        super().__init__(transforms, mean, std, channels_last=channels_last, dtype=dtype)


class EvalTransform(AugmentPipeline):
    """Deterministic evaluation transform: optional resize (shorter side) + center crop to ``size``, normalize.

    ``size`` comes first, as in the other presets. ``size=None`` keeps the input size (e.g. 32 px CIFAR).
    ``size=224, resize=256`` is the ImageNet protocol: resize the shorter side to 256, then crop the center
    224 x 224; ``resize`` defaults to ``size``.
    """

    def __init__(
        self,
        size: Size | None,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        resize: int | None = None,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if size is not None and not _is_size(size):
            raise ValueError(f"size must be None, an int or a pair of ints, got {size!r}; the signature is "
                             "EvalTransform(size, mean, std), e.g. EvalTransform(None, mean, std) to keep the size")
        transforms: list[nn.Module] = []
        if size is not None:
            short_side = resize or min(_pair(size))
            transforms = [K.Resize(short_side, side="short", antialias=True), K.CenterCrop(_pair(size))]
        super().__init__(transforms, mean, std, channels_last=channels_last, dtype=dtype)


class MultiView(nn.Module):
    """Independent views of one batch: ``augment.views``, ``n_views`` random draws of every image.

    The uint8 -> float conversion happens once for all views; the contrastive presets draw and make all the
    views at once. With ``seed`` the whole list is reproducible (all views come from one seeded generator,
    so they still differ).

    Shapes:
        input ``(N, C, H, W)`` uint8 or float in [0, 1]; output a list of ``n_views`` tensors ``(N, C, h, w)``.
    """

    def __init__(self, augment: AugmentPipeline, n_views: int = 2) -> None:
        super().__init__()
        if n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {n_views}")
        self.augment, self.n_views = augment, n_views

    def forward(self, images: Tensor, seed: int | None = None) -> list[Tensor]:
        return self.augment.views(images, self.n_views, seed)
