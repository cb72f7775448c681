"""trainer.mixed_precision=auto against the machine's capability (mocked), the warning for emulated bf16, the
refusal of fp16 on a CPU, and a run that starts under auto on one kind of CPU and resumes on the other."""

import contextlib
import json
import warnings

import pytest
import torch
from accelerate.state import AcceleratorState

from sslsec.config import ConfigError, load_config
from sslsec.engine import make_accelerator, pretrain
from sslsec.engine import precision
from sslsec.engine.precision import resolve_precision
from tests.launch import two_process_results


def _overrides(npz_root, output_dir, *extra):
    return ["data.name=npz", f"data.root={npz_root}", "model.backbone=small_cnn", "model.projection_hidden_dim=64",
            "model.projection_dim=32", "trainer.batch_size=32", "trainer.epochs=2", "trainer.log_every=1",
            "trainer.eval_every=0", "optim.warmup_epochs=0", f"output_dir={output_dir}", *extra]


def _cpu_bf16(monkeypatch, native):
    """This CPU computes bf16 natively (or not); runs go to the CPU even where a GPU exists."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")


def _emulation_warnings(caught):
    return [w for w in caught if issubclass(w.category, UserWarning) and "emulated" in str(w.message)]


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "no")])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native, expected):
    _cpu_bf16(monkeypatch, native)
    resolved, reason = resolve_precision("auto", "cpu")
    assert resolved == expected and reason.startswith("auto: ")
    assert ("natively" in reason) == native and ("emulated" in reason) == (not native)


def _gpu(native, emulated):
    """torch.cuda.is_bf16_supported of a GPU that computes bf16 (Ampere on), or only emulates it (before)."""
    return lambda including_emulation=True: native or (emulated and including_emulation)


@pytest.mark.parametrize("native, emulated, expected", [(True, True, "bf16"), (False, True, "fp16"),
                                                        (False, False, "fp16")])
def test_auto_on_cuda_is_bf16_where_computed_natively_else_fp16(monkeypatch, native, emulated, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _gpu(native, emulated))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())  # no GPU here to switch to
    assert resolve_precision("auto", torch.device("cuda", 1))[0] == expected
    assert resolve_precision("auto", "cuda")[0] == expected


def test_auto_on_cuda_asks_the_gpu_it_trains_on(monkeypatch):
    """Under a launcher each process trains on cuda:LOCAL_RANK: a machine with an old GPU 0 and a new GPU 1."""
    asked = []
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda device=None: asked.append(device) or device.index == 1)
    assert resolve_precision("auto", torch.device("cuda", 1))[0] == "bf16"
    assert resolve_precision("auto", torch.device("cuda", 0))[0] == "fp16"
    assert asked == [torch.device("cuda", 1), torch.device("cuda", 0)]


def test_the_processes_take_the_lowest_precision_every_one_computes():
    native, emulated = ("bf16", "auto: this CPU computes bf16 natively"), ("no", f"auto: {precision.EMULATED_BF16}")
    assert precision.lowest_common_precision([native, native]) == native
    resolved, reason = precision.lowest_common_precision([native, emulated, native])
    assert resolved == "no"
    assert reason == f"auto: fp32 on all 3 processes, the precision every one computes natively; process 1: " \
                     f"{precision.EMULATED_BF16}"
    gpus = [("fp16", "auto: this GPU has no bf16, so fp16 with loss scaling"), ("bf16", "auto: this GPU computes bf16")]
    assert precision.lowest_common_precision(gpus[::-1])[0] == "fp16"  # every CUDA GPU computes fp16
    assert [precision.precision_name(p) for p in ("no", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]


@pytest.mark.parametrize("requested", ["no", "bf16", "fp16"])
def test_an_explicit_precision_on_cuda_is_kept(monkeypatch, requested):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _gpu(False, False))
    assert resolve_precision(requested, "cuda") == (requested, f"trainer.mixed_precision={requested}")


def test_explicit_bf16_on_a_cpu_without_native_bf16_is_kept_with_one_warning(monkeypatch):
    _cpu_bf16(monkeypatch, False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved, reason = resolve_precision("bf16", "cpu")
    assert resolved == "bf16" and "emulated" in reason
    assert len(caught) == 1 and len(_emulation_warnings(caught)) == 1 and "mixed_precision=auto" in str(caught[0].message)

    _cpu_bf16(monkeypatch, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a native CPU: no warning
        assert resolve_precision("bf16", "cpu") == ("bf16", "trainer.mixed_precision=bf16")
        assert resolve_precision("no", "cpu") == ("no", "trainer.mixed_precision=no")


def test_fp16_on_a_cpu_is_one_config_error():
    with pytest.raises(ConfigError, match=r"trainer.mixed_precision=fp16 needs a GPU") as error:
        resolve_precision("fp16", "cpu")
    assert "\n" not in str(error.value) and "auto" in str(error.value)


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "no")])
def test_make_accelerator_resolves_auto_against_the_cpu_it_uses(monkeypatch, native, expected):
    _cpu_bf16(monkeypatch, native)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _gpu(False, False))  # a GPU would say fp16
    accelerator = make_accelerator(mixed_precision="auto", cpu=True)
    assert accelerator.device.type == "cpu" and accelerator.mixed_precision == expected
    assert accelerator.precision_reason == resolve_precision("auto", "cpu")[1]


def test_pretrain_with_fp16_on_a_cpu_stops_before_the_run_directory(npz_root, tmp_path, monkeypatch):
    _cpu_bf16(monkeypatch, True)
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        pretrain(load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.mixed_precision=fp16")))
    assert not (tmp_path / "run").exists()


def test_pretrain_under_emulated_bf16_warns_once_and_logs_its_precision(npz_root, tmp_path, monkeypatch, capsys):
    _cpu_bf16(monkeypatch, False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = pretrain(load_config(None, _overrides(npz_root, tmp_path / "run", "trainer.mixed_precision=bf16",
                                                    "trainer.max_steps=2")))
    assert len(_emulation_warnings(caught)) == 1
    first = _rows(run)[0]
    assert (first["step"], first["mixed_precision"]) == (0, "bf16") and "emulated" in first["precision_reason"]
    assert capsys.readouterr().out.splitlines()[0].startswith("precision: bf16 (trainer.mixed_precision=bf16, but")


def test_a_run_started_under_auto_resumes_on_a_cpu_of_the_other_kind(npz_root, tmp_path, monkeypatch, capsys):
    run_dir, extra = tmp_path / "run", ["trainer.mixed_precision=auto"]
    _cpu_bf16(monkeypatch, True)
    pretrain(load_config(None, _overrides(npz_root, run_dir, *extra, "trainer.max_steps=2")))
    assert not (run_dir / "backbone.safetensors").exists()

    AcceleratorState._reset_state(reset_partial_state=True)  # another machine: a new process
    _cpu_bf16(monkeypatch, False)
    pretrain(load_config(None, _overrides(npz_root, run_dir, *extra, "resume=true")))
    out = capsys.readouterr().out
    assert "precision: bf16 (auto: this CPU computes bf16 natively)" in out
    assert f"precision: fp32 (auto: {precision.EMULATED_BF16})" in out  # accelerate's "no" is printed as fp32

    assert (run_dir / "backbone.safetensors").is_file()
    assert load_config(run_dir / "config.yaml").trainer.mixed_precision == "auto"
    rows = _rows(run_dir)
    assert [(r["step"], r["mixed_precision"]) for r in rows if "mixed_precision" in r] == [(0, "bf16"), (2, "no")]
    steps = [r["step"] for r in rows if "total" in r]
    assert steps == list(range(1, 9)) and all(torch.isfinite(torch.tensor([r["total"] for r in rows if "total" in r])))


def test_accelerate_use_cpu_pins_the_cpu_even_where_a_gpu_exists(monkeypatch):
    """Tests not marked gpu set ACCELERATE_USE_CPU (tests/conftest.py), as ``accelerate launch --cpu`` does: the
    device must follow it, not only the precision that ``auto`` resolves to."""
    _cpu_bf16(monkeypatch, False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)  # a machine with a GPU
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *args, **kwargs: torch.device("cuda"))
    accelerator = make_accelerator(mixed_precision="auto")
    assert accelerator.device.type == "cpu" and accelerator.mixed_precision == "no"
    assert accelerator.ddp_handler.broadcast_buffers is False  # MoCo's queue is not sent at every forward


TWO_CPUS = """
import sys, torch
from sslsec.engine import precision
from sslsec.engine.accelerator import make_accelerator

rank = int(__import__("os").environ["RANK"])
precision.cpu_has_native_bf16 = lambda: rank == 0  # process 1's CPU has no native bf16
accelerator = make_accelerator(mixed_precision="auto", cpu=True)
assert torch.distributed.get_world_size() == 2
torch.save({"precision": accelerator.mixed_precision, "reason": accelerator.precision_reason},
           f"{sys.argv[1]}/rank{rank}.pt")
"""


@pytest.mark.slow
def test_auto_is_decided_once_for_all_processes_before_the_accelerator_is_built(tmp_path):
    """Two processes, process 1's CPU without native bf16: both train in fp32 (bf16 would be emulated on process 1,
    and processes in two precisions would train two models), and both say why."""
    ranks = two_process_results(tmp_path, TWO_CPUS)
    assert [rank["precision"] for rank in ranks] == ["no", "no"]
    assert ranks[0]["reason"] == ranks[1]["reason"] == (
        f"auto: fp32 on all 2 processes, the precision every one computes natively; process 1: "
        f"{precision.EMULATED_BF16}")
