"""verification.json's protocol, the rule that keeps another protocol's scores, and the printed table."""

import json

import numpy as np
import pytest

from sslsec.analysis.verification_report import (check_output, format_verification, verification_protocol,
                                                 write_verification)
from sslsec.config import load_config
from sslsec.eval import EvaluationError
from sslsec.eval.verification import VerificationROC


def scores(accuracy=91.234):
    roc = VerificationROC(np.arange(0, 4, 0.01), np.linspace(0, 1, 400), np.linspace(0, 1, 400) ** 2)
    return {"pairs": 600, "accuracy": accuracy, "accuracy_std": 1.5, "val_at_far": 40.0, "val_std": 3.25,
            "threshold": 1.23, "xnorm": 7.5, "far": 0.1, "images": 1200, "source": "lfw.bin", "roc": roc}


def test_the_protocol_holds_what_decides_the_scores_and_not_the_rest():
    protocol = verification_protocol(load_config(None, ["data.num_workers=4", "eval.verification_pairs=100"]))
    assert protocol["eval.verification_pairs"] == 100 and protocol["trainer.seed"] == 0
    assert "data.test_limit" in protocol and "eval.center_crop" in protocol
    assert not {"data.num_workers", "data.skip_corrupt", "eval.probe_epochs", "optim.lr"} & set(protocol)


def test_written_scores_are_kept_from_another_protocol(tmp_path):
    path = tmp_path / "verification.json"
    protocol = verification_protocol(load_config(None, []))
    plots = write_verification({"lfw": scores()}, path, protocol, "resnet18 (runs/x)", {"seconds": 1.0})
    saved = json.loads(path.read_text())
    assert saved["sets"]["lfw"]["accuracy"] == 91.234 and "roc" not in saved["sets"]["lfw"]
    assert saved["seconds"] == 1.0 and [p.name for p in plots] == ["verification_roc_lfw.png"]
    check_output(path, protocol)  # the same protocol: replaced without a word
    other = verification_protocol(load_config(None, ["eval.verification_far=0.01", "trainer.seed=1"]))
    with pytest.raises(EvaluationError, match=r"another protocol \(trainer.seed: 0 -> 1; "
                                              r"eval.verification_far: 0.001 -> 0.01\); give --output FILE"):
        check_output(path, other)
    check_output(path, other, overwrite=True)
    (tmp_path / "other.json").write_text('{"top1": 3}')
    with pytest.raises(EvaluationError, match="is not a verification.json of sslsec-verification"):
        check_output(tmp_path / "other.json", protocol)


def test_the_table_has_a_row_per_set():
    table = format_verification({"test": scores(), "lfw": scores(99.5)}, 1e-3).splitlines()
    assert "VAL@FAR=0.001 (%)" in table[0] and len(table) == 3
    assert table[1].split()[:5] == ["test", "600", "91.23", "±", "1.50"]
    assert table[2].split() == ["lfw", "600", "99.50", "±", "1.50", "40.00", "±", "3.25", "1.230", "7.500"]
