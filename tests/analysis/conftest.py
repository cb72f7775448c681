import pytest

from tests.fixtures import write_npz


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory):
    """Six classes of random 12 px grayscale images: 16 training and 6 test images each."""
    root = tmp_path_factory.mktemp("six")
    write_npz(root, channels=1, size=12, n_train=96, n_test=36, num_classes=6)
    return root


@pytest.fixture(scope="module")
def metric_overrides(six_classes):
    """``metric_overrides(output_dir, *extra)``: metric learning on :func:`six_classes`, trained on classes 0-2
    (3 x 4 images a batch), validated on the whole class 3, tested on the unseen classes 4 and 5."""
    def overrides(output_dir, *extra):
        return ["method=metric", "data.name=npz", f"data.root={six_classes}", "data.train_classes=[0,1,2,3]",
                "data.test_classes=[4,5]", "data.val_classes=[3]", "model.backbone=small_cnn",
                "model.embedding_dim=16", "metric.images_per_class=4", "trainer.batch_size=12", "trainer.epochs=2",
                "trainer.log_every=1", "trainer.eval_every=1", "trainer.checkpoint_every=1", "optim.name=adam",
                "optim.lr=1e-3", "optim.warmup_epochs=0", "loss.sec_weight=1.0", "trainer.mixed_precision=no",
                f"output_dir={output_dir}", *extra]

    return overrides
