"""Behaviour of the kornia augmentation presets: shapes, statistics of each op, seeding, boundary errors."""

import inspect

import pytest
import torch
from scipy import stats

from sslsec.augment import (EvalTransform, MetricAugment, MoCoV2Augment, MultiView, ProbeAugment, SimCLRAugment,
                            color_jitter_, gaussian_blur, resized_crops, sample_crop_boxes, seeded)

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
ONLY_CROP = dict(hflip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
N = 4000  # samples for frequency tests: a 4-sigma band of p=0.5 is +-0.032


def random_images(n=16, channels=3, size=32, seed=0):
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def frequency(mask: torch.Tensor) -> float:
    return mask.float().mean().item()


@pytest.mark.parametrize("preset", [SimCLRAugment, MoCoV2Augment])
def test_views_have_shape_dtype_device_and_normalized_range(preset):
    images = random_images(size=40)
    views = preset(32, MEAN, STD)(images)
    assert views.shape == (16, 3, 32, 32) and views.dtype == torch.float32 and views.device == images.device
    low = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    high = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert (views >= low.view(1, 3, 1, 1) - 1e-5).all() and (views <= high.view(1, 3, 1, 1) + 1e-5).all()


def test_uint8_and_unit_float_inputs_give_the_same_views():
    images = random_images()
    augment = SimCLRAugment(32, MEAN, STD)
    torch.testing.assert_close(augment(images, seed=3), augment(images.float() / 255, seed=3))


def test_channels_last_and_dtype_for_mixed_precision_models():
    views = MultiView(SimCLRAugment(32, MEAN, STD, channels_last=True, dtype=torch.bfloat16))(random_images())
    for view in views:
        assert view.dtype == torch.bfloat16 and view.is_contiguous(memory_format=torch.channels_last)


def test_multiview_views_are_independent_draws():
    view_1, view_2, view_3 = MultiView(SimCLRAugment(32, MEAN, STD), n_views=3)(random_images(64))
    for a, b in [(view_1, view_2), (view_1, view_3), (view_2, view_3)]:
        differs_per_image = (a - b).abs().flatten(1).amax(1) > 1e-3
        assert differs_per_image.all()


def test_seed_reproduces_views_and_leaves_global_rng_alone():
    augment, images = MultiView(MoCoV2Augment(32, MEAN, STD)), random_images()
    state = torch.get_rng_state()
    first, again, other = augment(images, seed=7), augment(images, seed=7), augment(images, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0], first[1])


def test_horizontal_flip_frequency_is_half():
    image = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    image[..., :4] = 255  # bright left half; flipped views are bright on the right
    augment = SimCLRAugment(8, **IDENTITY, **{**ONLY_CROP, "hflip_prob": 0.5}, crop_scale=(1, 1), crop_ratio=(1, 1))
    views = augment(image.expand(N, -1, -1, -1), seed=0)
    flipped = views[:, 0, 0, 0] < 0.5
    torch.testing.assert_close(views[~flipped], image.float().div(255).expand_as(views[~flipped]))
    assert abs(frequency(flipped) - 0.5) < 0.032


def test_grayscale_frequency_is_one_fifth():
    image = torch.tensor([200, 50, 10], dtype=torch.uint8).view(1, 3, 1, 1).expand(N, 3, 8, 8)
    augment = SimCLRAugment(8, **IDENTITY, **{**ONLY_CROP, "grayscale_prob": 0.2})
    views = augment(image, seed=0)
    gray = (views[:, 0] - views[:, 2]).abs().amax((1, 2)) < 1e-4
    assert abs(frequency(gray) - 0.2) < 0.026


def test_colour_jitter_frequency_is_four_fifths():
    image = torch.tensor([150, 100, 60], dtype=torch.uint8).view(1, 3, 1, 1).expand(N, 3, 8, 8)
    views = SimCLRAugment(8, **IDENTITY, **{**ONLY_CROP, "jitter_prob": 0.8})(image, seed=0)
    changed = (views - image.float() / 255).abs().flatten(1).amax(1) > 1e-4
    assert abs(frequency(changed) - 0.8) < 0.026


@pytest.mark.parametrize("preset, scale", [(SimCLRAugment, (0.08, 1.0)), (MoCoV2Augment, (0.2, 1.0))])
def test_crop_area_and_aspect_stay_in_the_recipe_range(preset, scale):
    size = 64  # channel 0 holds 4 * x, channel 1 holds 4 * y: view corners reveal the crop box
    coordinate = torch.arange(size, dtype=torch.uint8) * 4
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    image[0, 0], image[0, 1] = coordinate[None, :], coordinate[:, None]
    views = preset(16, **IDENTITY, **ONLY_CROP)(image.expand(2000, -1, -1, -1), seed=0) * 255 / 4
    width = views[:, 0, 0, -1] - views[:, 0, 0, 0] + 1
    height = views[:, 1, -1, 0] - views[:, 1, 0, 0] + 1
    area, aspect = width * height / size**2, width / height
    assert area.min() >= scale[0] - 0.005 and area.max() <= 1.0 + 1e-4
    assert area.min() < scale[0] + 0.05 and area.max() > 0.9  # the range is actually explored
    assert aspect.min() > 0.75 * 0.95 and aspect.max() < 4 / 3 * 1.05


def test_augment_config_keys_reach_kornia():
    from types import SimpleNamespace

    from sslsec.config import load_config
    from sslsec.methods import build_augment

    size = 64  # the coordinate image of the crop test above: view corners reveal the crop box
    coordinate = torch.arange(size, dtype=torch.uint8) * 4
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    image[0, 0], image[0, 1] = coordinate[None, :], coordinate[:, None]

    def crop_areas(*overrides):
        only_crop = [f"augment.{key}=0" for key in ONLY_CROP]
        config = load_config(None, ["method=moco", *only_crop, *overrides])
        augment = build_augment(config, SimpleNamespace(image_size=16, **IDENTITY))
        views = augment(image.expand(500, -1, -1, -1), seed=0) * 255 / 4
        width = views[:, 0, 0, -1] - views[:, 0, 0, 0] + 1
        height = views[:, 1, -1, 0] - views[:, 1, 0, 0] + 1
        return width * height / size**2

    assert crop_areas("augment.crop_scale=[0.9, 1.0]").min() >= 0.9 - 0.03  # corners round to the 4-px grid
    assert crop_areas().min() < 0.3  # unset: MoCo v2's published scale (0.2, 1)


def test_grayscale_data_works_and_jitter_changes_only_intensity():
    images = random_images(32, channels=1, size=28)
    views = MultiView(SimCLRAugment(28, (0.286,), (0.353,)))(images)
    assert [v.shape for v in views] == [(32, 1, 28, 28)] * 2
    constant = torch.full((N, 1, 4, 4), 128, dtype=torch.uint8)
    jittered = SimCLRAugment(4, (0.0,), (1.0,), **{**ONLY_CROP, "jitter_prob": 1.0})(constant, seed=0)
    factor = jittered[:, 0, 0, 0] / (128 / 255)  # brightness 0.4 -> factor in [0.6, 1.4]; contrast keeps it
    assert factor.min() > 0.6 - 1e-3 and factor.max() < 1.4 + 1e-3 and factor.std() > 0.1


def test_blur_is_on_for_imagenet_sizes_and_off_for_small_images():
    def blur_ops(size):
        return [op for op in SimCLRAugment(size, MEAN, STD).transforms if "Blur" in type(op).__name__]

    assert blur_ops(32) == []
    (blur,) = blur_ops(224)
    assert blur.p == 0.5 and blur.flags["kernel_size"] == 23


def test_blur_smooths_when_on():
    images = random_images(8, size=96)
    sharp = SimCLRAugment(96, **IDENTITY, **ONLY_CROP, crop_scale=(1, 1), crop_ratio=(1, 1))(images, seed=0)
    blurred = SimCLRAugment(96, **IDENTITY, **{**ONLY_CROP, "blur_prob": 1.0}, crop_scale=(1, 1),
                            crop_ratio=(1, 1))(images, seed=0)
    def roughness(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean()
    assert roughness(blurred) < 0.5 * roughness(sharp)


def test_eval_transform_is_deterministic_normalization_with_optional_resize_and_center_crop():
    images = random_images(size=40)
    plain = EvalTransform(None, MEAN, STD)
    expected = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(plain(images), expected)
    resized = EvalTransform(32, MEAN, STD)
    assert resized(images).shape == (16, 3, 32, 32) and torch.equal(resized(images), resized(images))
    wide = torch.zeros(2, 3, 32, 64, dtype=torch.uint8)
    wide[..., 16:48] = 255  # after the 32 px center crop only the bright middle is left
    assert torch.allclose(EvalTransform(32, **IDENTITY)(wide), torch.ones(2, 3, 32, 32), atol=1e-3)


def test_eval_transform_resize_256_crop_224_protocol_keeps_the_center_at_full_resolution():
    stored = random_images(n=2, size=64)  # stored at 64 (think 256), trained on 48 px crops (think 224)
    center = EvalTransform(48, **IDENTITY, resize=64)(stored)
    torch.testing.assert_close(center, stored[..., 8:56, 8:56].float() / 255, atol=1e-4, rtol=0)


@pytest.mark.parametrize("preset", [SimCLRAugment, MoCoV2Augment, MetricAugment, ProbeAugment, EvalTransform])
def test_every_preset_takes_size_then_mean_and_std(preset):
    images = random_images(n=4, size=24)
    assert list(inspect.signature(preset).parameters)[:3] == ["size", "mean", "std"]
    assert preset(16, mean=MEAN, std=STD)(images, seed=0).shape == (4, 3, 16, 16)
    assert preset(16, MEAN, STD)(images, seed=0).shape == (4, 3, 16, 16)


def test_eval_transform_given_mean_where_the_size_goes_names_the_signature():
    with pytest.raises(ValueError, match=r"EvalTransform\(size, mean, std\)"):
        EvalTransform(MEAN, STD, (1.0, 1.0, 1.0))


def test_probe_augment_crops_and_flips_but_keeps_colours():
    image = torch.tensor([200, 50, 10], dtype=torch.uint8).view(1, 3, 1, 1).expand(64, 3, 40, 40)
    views = ProbeAugment(32, **IDENTITY)(image, seed=0)
    assert views.shape == (64, 3, 32, 32)
    torch.testing.assert_close(views, image[..., :32, :32].float() / 255)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(3, 32, 32, dtype=torch.uint8), r"\(N, C, H, W\)"),
    (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "channels"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "dtype"),
])
def test_bad_input_raises_a_value_error_that_says_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        SimCLRAugment(32, MEAN, STD)(bad)


# Views drawn at once (ContrastiveAugment.views) against the kornia pipeline called once per view (the reference).
# Seeds are fixed, so these statistical tests cannot flake; the bands are 4 sigma, or a KS p-value above 1e-3.

def kornia_views(augment, images, n_views, seed):
    """The reference: the preset's kornia ImageSequential called once per view, each call its own draw."""
    unit = augment.to_unit_float(images)
    with seeded(seed):
        return [augment.transforms(unit) for _ in range(n_views)]


def coordinate_image(size=64):
    """Channel 0 holds 4 * x, channel 1 holds 4 * y: the corners of a view reveal its crop box and mirroring."""
    coordinate = torch.arange(size, dtype=torch.uint8) * 4
    image = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    image[0, 0], image[0, 1] = coordinate[None, :], coordinate[:, None]
    return image


def crop_geometry(view, size=64):
    """Area (fraction of the image), aspect ratio (width / height) and mirroring of each view of coordinate_image."""
    pixels = view * 255 / 4
    dx = pixels[:, 0, 0, -1] - pixels[:, 0, 0, 0]
    width, height = dx.abs() + 1, pixels[:, 1, -1, 0] - pixels[:, 1, 0, 0] + 1
    return width * height / size**2, width / height, dx < 0


def same_distribution(a, b):
    return stats.ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3


def test_resized_crops_and_color_jitter_compute_kornias_ops_with_its_parameters():
    augment = SimCLRAugment(24, MEAN, STD)
    crop, flip, jitter = augment.ops["crop"], augment.ops["flip"], augment.ops["jitter"]
    images = torch.rand(32, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    crop_params = crop.forward_parameters((64, 3, 40, 36))
    flip_params = flip.forward_parameters((64, 3, 24, 24))
    expected = flip(crop(images.repeat(2, 1, 1, 1), params=crop_params), params=flip_params)
    corners = crop_params["src"]
    boxes = torch.cat([corners[:, 0], corners[:, 2]], dim=1)
    boxes = torch.where(flip_params["batch_prob"].bool()[:, None], boxes[:, [2, 1, 0, 3]], boxes)
    crops = resized_crops(images, boxes.view(2, 32, 4), (24, 24))
    assert crops.shape == (2, 32, 3, 24, 24)
    torch.testing.assert_close(crops.flatten(0, 1), expected, atol=1e-5, rtol=0)
    jitter_params = jitter.forward_parameters(expected.shape)
    torch.testing.assert_close(color_jitter_(expected.clone(), jitter_params), jitter(expected, params=jitter_params))


def test_gaussian_blur_is_kornias_random_blur_of_the_same_draw():
    blur = SimCLRAugment(96, MEAN, STD).ops["blur"]
    images = torch.rand(16, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        blurred = gaussian_blur(images, blur)
    with seeded(0):
        expected = blur(images)
    torch.testing.assert_close(blurred, expected)
    assert 0 < (blurred != images).flatten(1).any(1).float().mean() < 1  # some images blurred, some kept


@pytest.mark.parametrize("image_size, scale, ratio", [
    ((28, 28), (0.35, 1.0), (3 / 4, 4 / 3)),  # Fashion-MNIST's recipe
    ((40, 64), (0.08, 1.0), (3 / 4, 4 / 3)),  # a wide image, SimCLR's scale
    ((28, 28), (0.9, 1.0), (2.0, 3.0)),       # no draw fits: the whole image cut to the nearest aspect ratio
])
def test_crop_boxes_are_distributed_as_kornias(image_size, scale, ratio):
    import kornia.augmentation as K

    with seeded(0):
        boxes = sample_crop_boxes(N, image_size, scale, ratio)
        corners = K.RandomResizedCrop((8, 8), scale=scale, ratio=ratio).forward_parameters((N, 1, *image_size))["src"]
    reference = torch.cat([corners[:, 0], corners[:, 2]], dim=1)  # (x, y) of the top-left and bottom-right pixels
    assert boxes.shape == (N, 4) and (boxes >= 0).all() and (boxes[:, 2:] < torch.tensor(image_size[::-1])).all()
    sizes, reference_sizes = boxes[:, 2:] - boxes[:, :2] + 1, reference[:, 2:] - reference[:, :2] + 1
    for column in range(2):  # width and x offset, height and y offset
        assert same_distribution(sizes[:, column], reference_sizes[:, column])
        assert same_distribution(boxes[:, column], reference[:, column])


@pytest.mark.parametrize("preset", [SimCLRAugment, MoCoV2Augment])
def test_views_crops_and_flips_are_distributed_as_the_kornia_pipelines(preset):
    augment = preset(16, **IDENTITY, **{**ONLY_CROP, "hflip_prob": 0.5})
    images = coordinate_image().expand(N // 2, -1, -1, -1)
    area, aspect, flipped = crop_geometry(torch.cat(augment.views(images, 2, seed=0)))
    ref_area, ref_aspect, ref_flipped = crop_geometry(torch.cat(kornia_views(augment, images, 2, seed=1)))
    assert same_distribution(area, ref_area) and same_distribution(aspect.log(), ref_aspect.log())
    assert abs(frequency(flipped) - 0.5) < 0.032 and abs(frequency(ref_flipped) - 0.5) < 0.032
    assert abs(area.mean() - ref_area.mean()) < 4 * (area.var() / N + ref_area.var() / N).sqrt()


def test_the_views_of_an_image_are_independent_draws():
    augment = SimCLRAugment(16, **IDENTITY, **{**ONLY_CROP, "hflip_prob": 0.5})
    first, second = augment.views(coordinate_image().expand(N, -1, -1, -1), 2, seed=0)
    (area_1, aspect_1, flip_1), (area_2, aspect_2, flip_2) = crop_geometry(first), crop_geometry(second)
    band = 4 / N**0.5  # 4 sigma of a correlation of independent draws
    assert abs(torch.corrcoef(torch.stack([area_1, area_2]))[0, 1]) < band
    assert abs(torch.corrcoef(torch.stack([aspect_1, aspect_2]))[0, 1]) < band
    assert abs(frequency(flip_1 == flip_2) - 0.5) < 0.032
    assert (area_1 != area_2).float().mean() > 0.9


def test_grayscale_jitter_draws_brightness_and_contrast_as_configured_and_as_kornia():
    # Fashion-MNIST's recipe: brightness and contrast 0.4 with p = 0.8, on pixels far enough from 0 and 1 that
    # nothing clips: an applied jitter multiplies the mean by the brightness factor and the spread by both factors.
    image = torch.full((1, 1, 8, 8), 80, dtype=torch.uint8)
    image[..., ::2] = 120
    augment = SimCLRAugment(8, (0.0,), (1.0,), **{**ONLY_CROP, "jitter_prob": 0.8}, crop_scale=(1, 1),
                            crop_ratio=(1, 1))
    unit = image.float() / 255

    def factors(views):
        view = torch.cat(views)
        return view.mean((1, 2, 3)) / unit.mean(), view.std((1, 2, 3)) / unit.std()

    brightness, spread = factors(augment.views(image.expand(N // 2, -1, -1, -1), 2, seed=0))
    ref_brightness, ref_spread = factors(kornia_views(augment, image.expand(N // 2, -1, -1, -1), 2, seed=1))
    assert same_distribution(brightness, ref_brightness) and same_distribution(spread, ref_spread)
    unchanged = ((brightness - 1).abs() < 1e-5) & ((spread - 1).abs() < 1e-5)
    assert abs(frequency(unchanged) - 0.2) < 0.026
    assert stats.kstest(brightness[~unchanged].numpy(), "uniform", args=(0.6, 0.8)).pvalue > 1e-3
    assert stats.kstest((spread / brightness)[~unchanged].numpy(), "uniform", args=(0.6, 0.8)).pvalue > 1e-3


def test_colour_views_are_distributed_as_the_kornia_pipelines():
    # The whole SimCLR recipe on colour images: jitter (random order), grayscale, crop and flip.
    images = random_images(N // 2, size=12, seed=3)
    augment = SimCLRAugment(8, **IDENTITY)
    views, reference = torch.cat(augment.views(images, 2, seed=0)), torch.cat(kornia_views(augment, images, 2, 1))
    for statistic in (lambda v: v.mean((2, 3)), lambda v: v.std((2, 3))):
        for channel in range(3):
            assert same_distribution(statistic(views)[:, channel], statistic(reference)[:, channel])

    def gray(v):
        return (v[:, 0] - v[:, 2]).abs().amax((1, 2)) < 1e-4
    assert abs(frequency(gray(views)) - 0.2) < 0.026 and abs(frequency(gray(reference)) - 0.2) < 0.026


def test_views_are_reproducible_by_seed_and_leave_the_global_generator_alone():
    augment, images = SimCLRAugment(16, MEAN, STD, channels_last=True), random_images(size=24)
    state = torch.get_rng_state()
    first, again, other = (augment.views(images, 2, seed=seed) for seed in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[0], first[1])
    assert all(v.shape == (16, 3, 16, 16) and v.is_contiguous(memory_format=torch.channels_last) for v in first)
    with pytest.raises(ValueError, match="n_views"):
        augment.views(images, 0)
