"""The installed torch and torchvision work together, and the dependency ranges say what was tested.

A torchvision built for another torch than the one installed fails only when its compiled operators load
(``operator torchvision::nms does not exist``): the README's one-command install must not lead there.
"""

import re
from pathlib import Path

import torch
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def test_torchvision_compiled_ops_run_with_the_installed_torch():
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # box 1 overlaps box 0 with IoU 81/119 = 0.68 > 0.5 and is suppressed; box 2 overlaps nothing
    assert nms(boxes, scores, iou_threshold=0.5).tolist() == [0, 2]
    assert nms(boxes, scores, iou_threshold=0.7).tolist() == [0, 1, 2]


def dependencies():
    """``{name: requirement}`` of pyproject.toml's ``dependencies`` and ``dev`` extras."""
    text = (ROOT / "pyproject.toml").read_text()
    quoted = re.findall(r'"([A-Za-z0-9_.\-]+)([<>=!~][^"]*)"', text)
    return {name.lower(): spec for name, spec in quoted}


def test_every_dependency_has_a_floor_and_the_floor_file_names_it():
    floors = dict(line.split("==") for line in (ROOT / "constraints" / "floor.txt").read_text().splitlines()
                  if line and not line.startswith("#"))
    for name, spec in dependencies().items():
        if name in ("setuptools", "tensorboard"):
            continue
        floor = re.search(r">=([0-9][^,]*)", spec)
        assert floor, f"{name} has no floor ({spec})"
        assert name in floors and Version(floors[name]) == Version(floor.group(1)), \
            f"constraints/floor.txt should pin {name}=={floor.group(1)}, the floor of {spec}"

