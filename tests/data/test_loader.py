"""The batch loader: the sharding rule over processes, pairing, resume, and folder batches through workers."""

import math

import pytest
import torch

from sslsec.data import BatchLoader, CorruptImageError, ImageArrays, load_dataset
from tests.fixtures import write_jpeg_folder


@pytest.mark.parametrize("workers, decode_on_device", [(0, False), (2, False), (2, True)])
def test_folder_batches_through_workers_decoded_there_or_on_the_device(tmp_path, workers, decode_on_device):
    write_jpeg_folder(tmp_path, {"a": 3, "b": 4}, split_folders=("train",))
    data = load_dataset("imagenet_folder", tmp_path, image_size=16)
    loader = BatchLoader(data, 3, shuffle=True, drop_last=False, num_workers=workers,
                         decode_on_device=decode_on_device)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [3, 3, 1] and len(loader) == 3
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert images.shape == (7, 3, 16, 16) and sorted(labels.tolist()) == [0] * 3 + [1] * 4
    assert ((images[:, 0, 8, 8].int() - 20 * labels).abs() <= 3).all()  # each image arrives with its label


def indexed_dataset(n: int) -> ImageArrays:
    """Sample i has label i and every pixel i, so batches reveal which samples they hold."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageArrays(images, torch.arange(n), [str(i) for i in range(n)], (0.5,), (0.25,), "indexed")


def shard_lists(n, batch, world, epoch, **kwargs):
    """Per rank, the list of label batches (= sample indices) for ``epoch``."""
    shards = []
    for rank in range(world):
        loader = BatchLoader(indexed_dataset(n), batch, rank=rank, world_size=world, seed=5, **kwargs)
        loader.set_epoch(epoch)
        shards.append([labels.tolist() for _, labels in loader])
    return shards


@pytest.mark.parametrize("drop_last", [False, True])
def test_two_ranks_split_each_global_batch_of_one_seeded_permutation(drop_last):
    n, batch, world, epoch = 23, 4, 2, 3
    rank_0, rank_1 = shard_lists(n, batch, world, epoch, shuffle=True, drop_last=drop_last)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5 + epoch)).tolist()
    expected_batches = n // (batch * world) if drop_last else math.ceil(n / (batch * world))
    assert len(rank_0) == len(rank_1) == expected_batches
    for b, (part_0, part_1) in enumerate(zip(rank_0, rank_1)):
        assert part_0 + part_1 == order[b * batch * world:(b + 1) * batch * world]
    seen = sorted(i for shard in (rank_0, rank_1) for part in shard for i in part)
    assert seen == (sorted(order[:16]) if drop_last else list(range(n)))


def test_images_and_labels_stay_paired_and_epochs_reshuffle():
    loader = BatchLoader(indexed_dataset(20), 8, shuffle=True, drop_last=False)
    epoch_0 = [(images, labels) for images, labels in loader]
    assert all(torch.equal(images[:, 0, 0, 0].long(), labels) for images, labels in epoch_0)
    assert epoch_0[0][0].dtype == torch.uint8 and epoch_0[0][1].dtype == torch.int64
    loader.set_epoch(1)
    assert [lab.tolist() for _, lab in loader] != [lab.tolist() for _, lab in epoch_0]
    assert shard_lists(20, 8, 1, 0, shuffle=False, drop_last=False)[0][0] == list(range(8))


def test_resume_mid_epoch_yields_exactly_the_remaining_batches():
    loader = BatchLoader(indexed_dataset(50), 4, shuffle=True, drop_last=True, rank=1, world_size=2)
    loader.set_epoch(2)
    full = [labels.tolist() for _, labels in loader]
    loader.set_epoch(2, start_batch=4)
    assert [labels.tolist() for _, labels in loader] == full[4:] and len(loader) == len(full) == 6


def test_loader_rejects_impossible_settings():
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(indexed_dataset(8), 2, shuffle=False, drop_last=False, rank=2, world_size=2)
    with pytest.raises(ValueError, match="start_batch"):
        BatchLoader(indexed_dataset(8), 2, shuffle=False, drop_last=False).set_epoch(0, start_batch=5)
    too_few = BatchLoader(indexed_dataset(8), 8, shuffle=False, drop_last=True, world_size=2)
    assert len(too_few) == 0 and list(too_few) == []  # the caller decides whether an empty epoch is an error


def classed_dataset(counts) -> ImageArrays:
    """Sample i has every pixel i % 256 and class c for counts[c] samples in a row."""
    labels = torch.cat([torch.full((count,), c) for c, count in enumerate(counts)])
    n = len(labels)
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageArrays(images, labels, [str(c) for c in range(len(counts))], (0.5,), (0.25,), "classed")


def test_class_balanced_batches_hold_p_classes_of_k_images_and_cover_the_epoch_once():
    counts = [40, 40, 40, 30, 50, 2]  # the last class has fewer images than K: drawn with replacement
    data = classed_dataset(counts)
    loader = BatchLoader(data, 12, shuffle=True, drop_last=False, images_per_class=4, seed=3)
    batches = [(images, labels) for images, labels in loader]
    assert len(batches) == len(data) // 12 == 16 and loader.drop_last
    for images, labels in batches:
        groups = labels.view(3, 4)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 3  # 3 classes x 4 images
    indices = torch.cat(loader.shard_indices(0))
    assert torch.equal(data.labels[indices], torch.cat([labels for _, labels in batches]))
    seen = torch.bincount(indices[data.labels[indices] < 5], minlength=len(data))[: sum(counts[:5])]
    assert (seen <= 2).all() and (seen == 1).float().mean() > 0.85  # about once each in one epoch


def test_class_balanced_batches_are_seeded_and_split_whole_classes_over_ranks():
    data = classed_dataset([20] * 8)
    shards = [BatchLoader(data, 8, shuffle=True, drop_last=True, images_per_class=4, seed=1, rank=rank,
                          world_size=2).shard_indices(5) for rank in (0, 1)]
    for part_0, part_1 in zip(*shards):
        classes = [set(data.labels[part].tolist()) for part in (part_0, part_1)]
        assert all(len(c) == 2 for c in classes) and not classes[0] & classes[1]
    again = BatchLoader(data, 8, shuffle=True, drop_last=True, images_per_class=4, seed=1, rank=0, world_size=2)
    assert all(torch.equal(a, b) for a, b in zip(again.shard_indices(5), shards[0]))
    assert not all(torch.equal(a, b) for a, b in zip(again.shard_indices(6), shards[0]))
    with pytest.raises(ValueError, match="multiple of images_per_class"):
        BatchLoader(data, 6, shuffle=True, drop_last=True, images_per_class=4)
    with pytest.raises(ValueError, match="the data has 8"):
        BatchLoader(classed_dataset([20] * 8), 36, shuffle=True, drop_last=True, images_per_class=4).shard_indices(0)


@pytest.mark.parametrize("workers, decode_on_device", [(0, False), (2, False), (2, True)])
def test_a_corrupt_file_is_named_in_the_main_process_or_skipped_once_with_a_warning(tmp_path, capfd, workers,
                                                                                   decode_on_device):
    write_jpeg_folder(tmp_path, {"a": 3, "b": 4}, split_folders=("train",))
    bad = tmp_path / "train" / "a" / "bad.jpg"  # sorts last in class a
    bad.write_bytes(b"not a JPEG at all")
    strict = load_dataset("imagenet_folder", tmp_path, image_size=16)
    loader = BatchLoader(strict, 4, shuffle=True, drop_last=False, num_workers=workers,
                         decode_on_device=decode_on_device)
    with pytest.raises(CorruptImageError) as error:
        list(loader)
    assert error.value.path == str(bad) and ": Unsupported image file;" in str(error.value)
    assert "data.skip_corrupt=true" in str(error.value) and "\n" not in str(error.value)

    skipping = load_dataset("imagenet_folder", tmp_path, image_size=16, skip_corrupt=True)
    loader = BatchLoader(skipping, 4, shuffle=True, drop_last=False, num_workers=workers,
                         decode_on_device=decode_on_device)
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert [len(labels) for _, labels in batches] == [4, 4]  # the bad file's place is taken, not dropped
        images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        assert ((images[:, 0, 8, 8].int() - 20 * labels).abs() <= 3).all()  # by an image of its own class
        assert sorted(labels.tolist()) == [0] * 4 + [1] * 4
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "1 corrupt file skipped" in warnings[0]
    assert skipping.corrupt == {str(bad): "Unsupported image file"}
