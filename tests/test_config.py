from pathlib import Path

import pytest

from sslsec.config import Config, ConfigError, load_config, save_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_with_sec_on(path):
    config = load_config(path)
    assert config.method in path.stem or (config.method, path.stem[:4]) == ("metric", "dml_")
    assert config.output_dir == f"runs/{path.stem}"
    # the SEC authors ramp the weight up in their SSL code, not in their metric-learning code
    schedule = "constant" if config.method in ("metric", "face") else "linear"
    assert config.loss.sec_weight > 0 and config.loss.sec_schedule == schedule
    data = config.data
    if data.train_classes is not None:  # class-disjoint metric learning: every class in one split, validation inside
        assert sorted(data.train_classes + data.test_classes) == list(range(max(data.test_classes) + 1))
        assert data.val_classes is None or set(data.val_classes) < set(data.train_classes)


def test_overrides_are_typed_and_applied_in_order(tmp_path):
    config = load_config(CONFIGS[0], ["loss.sec_weight=1", "trainer.epochs=5", "loss.sec_momentum=0.1",
                                      "resume=true", "output_dir=runs/x", "optim.weight_decay=1e-6",
                                      "trainer.epochs=7", "loss.sec_momentum=null"])
    assert config.optim.weight_decay == 1e-6
    assert config.loss.sec_weight == 1.0 and isinstance(config.loss.sec_weight, float)
    assert config.trainer.epochs == 7 and config.loss.sec_momentum is None  # the later override wins
    assert config.resume is True and config.output_dir == "runs/x"
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_values_are_typed_by_the_schema_not_by_yaml(tmp_path):
    config = load_config(None, ["trainer.mixed_precision=no", "optim.lr=1e-3", "data.train_limit=null",
                                "model.backbone=small_cnn", "output_dir=123", "augment.crop_scale=[0.3, 1]"])
    assert config.trainer.mixed_precision == "no" and config.optim.lr == 0.001 and isinstance(config.optim.lr, float)
    assert config.data.train_limit is None and config.output_dir == "123"
    assert config.augment.crop_scale == (0.3, 1.0) and isinstance(config.augment.crop_scale[1], float)
    (tmp_path / "c.yaml").write_text("trainer:\n  mixed_precision: no\n  channels_last: off\noptim:\n  lr: 1e-3\n"
                                     "resume: runs/x/checkpoints/step_00000010\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.trainer.mixed_precision == "no" and config.trainer.channels_last is False
    assert config.optim.lr == 0.001 and config.resume == "runs/x/checkpoints/step_00000010"


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.sec_wieght=1", "unknown key loss.sec_wieght; valid keys under loss: temperature, sec_weight"),
        ("trainer.epochs=five", "trainer.epochs must be int, got 'five'"),
        ("trainer.epochs=2.5", "trainer.epochs must be int"),
        ("method=swav", "method must be one of simclr, moco, byol, simsiam"),
        ("byol.momentum=1", "byol.momentum must be in [0, 1), got 1.0"),
        ("model.prediction_hidden_dim=0", "model.prediction_hidden_dim must be > 0"),
        ("loss.sec_weight=-1", "loss.sec_weight must be >= 0"),
        ("loss.sec_momentum=2", "loss.sec_momentum must be null or in (0, 1]"),
        ("trainer.mixed_precision=fp8", "trainer.mixed_precision must be one of auto, no, bf16, fp16"),
        ("data=cifar10", "data must be a mapping"),
        ("trainer.epochs=null", "trainer.epochs must be set (expected int)"),
        ("augment.crop_scale=[0.5, 0.2]", "augment.crop_scale must be [low, high] with 0 < low <= high"),
        ("model.backbone=vit", "model.backbone must be one of resnet18, resnet50, small_cnn; got 'vit'"),
        ("data.name=mnist", "data.name must be one of cifar10, cifar100, fashion_mnist, npz, imagenet_folder"),
        ("epochs", "must look like key=value"),
        ("model.pretrained=true", "model.pretrained=true loads ImageNet weights into torchvision's 7x7 stem; set "
                                  "model.cifar_stem=false"),
        ("loss.contrastive=infonce", "loss.contrastive must be one of ntxent, dcl, dclw; got 'infonce'"),
        ('eval.verification_sets=[""]', "eval.verification_sets[0] must be set (expected str)"),  # a list of str
    ],
)
def test_bad_values_name_the_key_and_the_choices(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_contrastive_loss_without_a_queue_is_refused_for_moco():
    with pytest.raises(ConfigError, match="loss.contrastive=dclw has no queue of negatives, which method=moco needs"):
        load_config(None, ["method=moco", "loss.contrastive=dclw"])
    assert load_config(None, ["method=simclr", "loss.contrastive=dclw"]).loss.contrastive == "dclw"


def test_the_schemas_defaults_pass_validation_unchanged():
    assert load_config(None) == Config()


def test_pretrained_needs_a_backbone_with_imagenet_weights():
    with pytest.raises(ConfigError, match="model.pretrained=true needs ImageNet weights, which small_cnn has not; use "
                                          "model.backbone=resnet18 or resnet50, or model.pretrained=false"):
        load_config(None, ["model.backbone=small_cnn", "model.pretrained=true"])
    assert load_config(None, ["model.pretrained=true", "model.cifar_stem=false"]).model.pretrained is True
