"""Behaviour of the kornia augmentation presets: shapes, statistics of each op, seeding, boundary errors."""

import inspect

import pytest
import torch

from sslsec.augment import EvalTransform, MetricAugment, MoCoV2Augment, MultiView, ProbeAugment, SimCLRAugment

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
