"""Data: readers of the supported data sets (:mod:`.datasets`), the run's splits (:mod:`.splits`) and the batch
loader that cuts per-process uint8 batches on the device (:mod:`.loader`)."""

from sslsec.data.datasets import (DATASET_NAMES, CorruptImageError, DatasetError, ImageArrays, ImageFolderDataset, load_dataset,
                                  select_classes, stratified_first)
from sslsec.data.loader import BatchLoader
from sslsec.data.splits import Splits, load_split, load_splits, validation_split

__all__ = ["DATASET_NAMES", "BatchLoader", "CorruptImageError", "DatasetError", "ImageArrays", "ImageFolderDataset", "Splits",
           "load_dataset", "load_split", "load_splits", "select_classes", "stratified_first", "validation_split"]
