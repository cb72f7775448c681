"""Console entry points (``sslsec-pretrain``, ``sslsec-linear-probe``, ``sslsec-retrieval``,
``sslsec-verification``, ``sslsec-diagnose``, ``sslsec-study``, ``sslsec-metric-study``): parse the arguments, call one library function, print what it found.

One style of command line: everything that is a config key is given as ``key=value`` (before or after the
flags; the syntax of :func:`sslsec.config.load_config`), flags are only for what is not a config key, and
``--help`` lists every config key with its default. Every entry point turns a user error (a bad config, a missing file, a data set that
does not fit the backbone) into one ``error:`` line on stderr and exit code 2, never a traceback; Ctrl-C outside
pretraining's own stop (which checkpoints) into one line and exit code 130.

The command line is parsed and the config keys listed before anything heavy is imported: torch, kornia, lightly,
accelerate and matplotlib are imported inside the functions that use them, so ``--help`` and errors in the command
line start in about a second.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple, Union

from sslsec.analysis.choices import (DEFAULT_VARIANTS, METRIC_DEFAULT_LOSSES, METRIC_DEFAULT_VARIANTS,
                                     METRIC_DEFAULT_WEIGHTS, VARIANTS)
from sslsec.config import ConfigError, config_keys, format_override, load_config

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import nn

    from sslsec.config import Config

# The user errors, by the module that defines each: a module that was never imported raised none of its errors.
USER_ERRORS = {"sslsec.config": "ConfigError", "sslsec.data.datasets": "DatasetError",
               "sslsec.eval.features": "EvaluationError", "sslsec.models": "PretrainedWeightsError",
               "sslsec.runs": "RunError", "sslsec.engine.checkpoint": "TrainingError"}
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def user_errors() -> Tuple[type, ...]:
    """The exception classes that are the user's to fix (one ``error:`` line), among the modules loaded so far."""
    loaded = [getattr(sys.modules[module], name) for module, name in USER_ERRORS.items() if module in sys.modules]
    return (*loaded, FileNotFoundError)


@contextlib.contextmanager
def _exit_on_user_error(program: str, interrupted: str = "nothing was written") -> Iterator[None]:
    """A user error: one ``error:`` line, exit code 2. Ctrl-C: one line saying ``interrupted``, exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"{program}: stopped by Ctrl-C; {interrupted}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        print(f"{program}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _parser(program: str, description: str, example: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program, description=description, epilog=config_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"config overrides (any key listed below), e.g. {example}")
    return parser


def config_help(width: int = 100) -> str:
    """The config sections and their keys with the defaults, as ``--help`` shows them."""
    lines = ["config keys (give them as key=value), with their defaults:"]
    for section, items in itertools.groupby(config_keys(), key=lambda item: item[0].rpartition(".")[0]):
        text = "  ".join(f"{key.rpartition('.')[2]}={_yaml_value(value)}" for key, value in items)
        lines += textwrap.wrap(text, width, initial_indent=f"  {section or '(top level)'}:  ",
                               subsequent_indent=" " * 6)
    return "\n".join(lines)


def _yaml_value(value: object) -> str:
    return format_override("", value)[1:]


def _parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Overrides may come before, between and after the flags."""
    return parser.parse_intermixed_args(argv)


def _evaluation_parser(program: str, description: str, example: str, output: str) -> argparse.ArgumentParser:
    """The command line of the tools that score a frozen backbone: a run, a saved backbone or random weights."""
    parser = _parser(program, description, example)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, metavar="RUN_DIR",
                        help="a pretraining run directory (config.yaml, backbone.safetensors)")
    source.add_argument("--backbone", type=Path, metavar="FILE",
                        help="a backbone saved by save_backbone (needs --config)")
    source.add_argument("--random-init", action="store_true", help="untrained weights: the baseline (needs --config)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="config YAML for --backbone / --random-init")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help=f"where {output} goes (default: the run directory, the backbone's folder, "
                        "or OUTPUT_DIR/random_init for --random-init)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {output} where it holds the scores of other settings (without it, the "
                        "command refuses to; the same settings' scores are always replaced)")
    return parser


def _evaluation_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    args = _parse(parser, argv)
    if (args.run is None) == (args.config is None):
        parser.error("--backbone and --random-init need --config FILE; --run reads RUN/config.yaml instead")
    return args


def linear_probe_main(argv: Optional[Sequence[str]] = None) -> None:
    """``sslsec-linear-probe``: linear probe and kNN of a frozen backbone; writes ``linear_probe.json``."""
    parser = _evaluation_parser("sslsec-linear-probe", "Linear probe (top-1/top-5) and kNN accuracy of a frozen "
                                "backbone.", "eval.probe_epochs=10 data.train_limit=5000", "linear_probe.json")
    args = _evaluation_args(parser, argv)
    with _exit_on_user_error(parser.prog):
        _probe(*_probe_target(args), overwrite=args.overwrite)


def _probe(config: Config, backbone: Optional[nn.Module], output_dir: Path, label: str, source: Union[Path, str],
           accelerator: Optional[Accelerator] = None, overwrite: bool = False) -> None:
    """Linear probe + kNN of ``backbone`` (random init if None; ``source``: its file, or the words of a random init);
    print and write ``linear_probe.json``, refused before the work where it holds another protocol's scores
    unless ``overwrite``."""
    from sslsec.data import load_splits
    from sslsec.engine import make_accelerator
    from sslsec.eval import eval_crop_size, evaluate_backbone, random_backbone
    from sslsec.runs import check_scores_file, scores_protocol, write_scores

    if _classes_unseen_in_training(config):
        raise ConfigError("data.test_classes are not the training classes, so a classifier trained on the "
                          "training split cannot score them: use sslsec-retrieval (scripts/retrieval.py)")
    path, protocol = output_dir / "linear_probe.json", scores_protocol(config, source)
    if not overwrite:
        check_scores_file(path, protocol)
    train, val, test = load_splits(config)
    if backbone is None:
        backbone = random_backbone(config, train.channels)
    accelerator = accelerator or make_accelerator(mixed_precision=config.trainer.mixed_precision)
    start = time.perf_counter()
    result = evaluate_backbone(backbone, train, test, config.eval, accelerator=accelerator,
                               seed=config.trainer.seed, val=val, crop_size=eval_crop_size(config),
                               num_workers=config.data.num_workers)
    result = {"dataset": test.name, "backbone": label, **result, "mixed_precision": accelerator.mixed_precision,
              "num_processes": accelerator.num_processes, "seconds": time.perf_counter() - start}
    if accelerator.is_main_process:
        write_scores(path, result, protocol)
        _print_probe(result, path)


def _probe_target(args: argparse.Namespace) -> Tuple[Config, Optional[nn.Module], Path, str, Union[Path, str]]:
    """(config, backbone or None for random init, output directory, a label for the backbone, its source: the
    weights file or the words of a random init)."""
    from sslsec.runs import RunPaths, load_run, load_saved_backbone

    if args.run is not None:
        config, backbone = load_run(args.run, args.overrides)
        return (config, backbone, args.output_dir or args.run, f"{config.model.backbone} ({args.run})",
                RunPaths(args.run).backbone)
    config = load_config(args.config, args.overrides)
    if args.backbone is not None:
        return (config, load_saved_backbone(args.backbone), args.output_dir or args.backbone.parent,
                str(args.backbone), args.backbone)
    # Beside the run of the same config, never over it: the README's order (main job, then baseline) must work.
    output_dir = args.output_dir or Path(config.output_dir) / "random_init"
    return config, None, output_dir, f"{config.model.backbone} (random init, seed {config.trainer.seed})", "random init"


def _print_probe(result: dict, path: Path) -> None:
    top5 = "n/a" if result["top5"] is None else f"{result['top5']:6.2f} %"
    print(f"{result['backbone']} on {result['dataset']}: {result['train_size']} train / {result['test_size']} "
          f"test images, {result['num_classes']} classes, {result['epochs']} probe epochs")
    if "val_top1" in result:
        print(f"  validation ({result['val_size']} training images held out):  linear top-1 "
              f"{result['val_top1']:6.2f} %   kNN top-1 {result['val_knn_top1']:6.2f} %")
    best = (f"   (best epoch {result['best_epoch']}: {result['best_top1']:.2f} %, the published protocol's figure)"
            if result.get("schedule") == "step" else "")
    print(f"  linear top-1  {result['top1']:6.2f} %{best}")
    print(f"  linear top-5  {top5}")
    print(f"  kNN top-1     {result['knn_top1']:6.2f} %   (k={result['knn_k']}, T={result['knn_temperature']})")
    print(f"wrote {path}  ({result['seconds']:.1f} s)")


RETRIEVAL_COLUMNS = (("recall_at_1", "R@1"), ("recall_at_2", "R@2"), ("recall_at_4", "R@4"), ("recall_at_8", "R@8"),
                     ("map_at_r", "MAP@R"), ("r_precision", "RP"), ("nmi", "NMI"))


def retrieval_main(argv: Optional[Sequence[str]] = None) -> None:
    """``sslsec-retrieval``: Recall@K, MAP@R, R-precision and NMI of a frozen backbone on the validation and test
    splits; writes ``retrieval.json``."""
    parser = _evaluation_parser(
        "sslsec-retrieval", "Retrieval (Recall@1/2/4/8, MAP@R, R-precision, NMI) of a frozen backbone's embeddings "
        "on the validation and test splits, each image queried against all others of its split by cosine "
        "similarity. Metric-learning configs test on classes never seen in training (data.test_classes).",
        "data.test_classes=[5,6,7,8,9]", "retrieval.json")
    args = _evaluation_args(parser, argv)
    with _exit_on_user_error(parser.prog):
        _retrieval(*_probe_target(args), overwrite=args.overwrite)


def _retrieval(config: Config, backbone: Optional[nn.Module], output_dir: Path, label: str, source: Union[Path, str],
               overwrite: bool = False) -> None:
    """Retrieval scores of ``backbone`` (random init if None; ``source`` as for :func:`_probe`); print the table and
    write ``retrieval.json``, refused before the work where it holds another protocol's scores unless ``overwrite``."""
    from accelerate import PartialState

    from sslsec.engine import make_accelerator
    from sslsec.eval import score_retrieval
    from sslsec.runs import check_scores_file, scores_protocol, write_scores

    path, protocol = output_dir / "retrieval.json", scores_protocol(config, source)
    if not overwrite:
        check_scores_file(path, protocol)

    result = score_retrieval(config, backbone,
                             accelerator=make_accelerator(mixed_precision=config.trainer.mixed_precision))
    if not PartialState().is_main_process:
        return
    classes = ("classes never seen in training" if _classes_unseen_in_training(config) else
               "the training classes (seen in pretraining)")
    print(f"{label}: retrieval by cosine similarity, each image against the others of its split; the test split "
          f"holds {classes}")
    print(f"  {'split':<6} {'images':>7} {'classes':>7}  " + "  ".join(f"{name:>6}" for _, name in RETRIEVAL_COLUMNS)
          + "  ||e|| std/mean")
    for split, scores in result.items():
        print(f"  {split:<6} {scores['images']:>7} {scores['classes']:>7}  "
              + "  ".join(f"{scores[key]:6.2f}" for key, _ in RETRIEVAL_COLUMNS)
              + f"  {scores['norm_std_over_mean']:.3f}")
    write_scores(path, result, protocol)
    print(f"wrote {path}")


def verification_main(argv: Optional[Sequence[str]] = None) -> None:
    """``sslsec-verification``: face verification of a frozen backbone by insightface's protocol on pairs drawn from
    the validation and test splits and on ``eval.verification_sets``; writes ``verification.json`` and ROC plots."""
    parser = _evaluation_parser(
        "sslsec-verification", "Face verification (accuracy over 10 folds, VAL@FAR, insightface's protocol) of a "
        "frozen backbone's flip-summed embeddings: eval.verification_pairs same / different pairs drawn from the "
        "validation and test splits, and each insightface .bin file or LFW-style folder with a pairs.txt of "
        "eval.verification_sets. Writes verification.json and a ROC plot per set (verification_roc_SET.png).",
        "eval.verification_sets=[data/lfw.bin]", "verification.json")
    args = _evaluation_args(parser, argv)
    with _exit_on_user_error(parser.prog):
        _verification(*_probe_target(args), overwrite=args.overwrite)


def _verification(config: Config, backbone: Optional[nn.Module], output_dir: Path, label: str,
                  source: Union[Path, str], overwrite: bool = False) -> None:
    """Verification scores of ``backbone`` (random init if None; ``source`` as for :func:`_probe`); print the table,
    write ``verification.json`` and the ROC plots, refused before the work where it holds another protocol's scores
    unless ``overwrite``."""
    from accelerate import PartialState

    from sslsec.analysis.verification_report import format_verification, write_verification
    from sslsec.engine import make_accelerator
    from sslsec.eval import score_verification
    from sslsec.runs import check_scores_file, scores_protocol

    path, protocol = output_dir / "verification.json", scores_protocol(config, source)
    if not overwrite:
        check_scores_file(path, protocol)
    start = time.perf_counter()
    accelerator = make_accelerator(mixed_precision=config.trainer.mixed_precision)
    result = score_verification(config, backbone, accelerator=accelerator)
    if not PartialState().is_main_process:
        return
    plots = write_verification(result, path, protocol, label, {"mixed_precision": accelerator.mixed_precision,
                                                               "seconds": time.perf_counter() - start})
    flip = "f(x) + f(flip x)" if config.eval.verification_flip else "f(x)"
    print(f"{label}: verification of {flip}, {config.eval.verification_folds} folds")
    print(format_verification(result, config.eval.verification_far))
    print(f"wrote {path}" + (f" and {len(plots)} ROC plots ({plots[0].name}, ...)" if plots else
                             " (no ROC plots: pip install 'sslsec[plots]')"))


def _classes_unseen_in_training(config: Config) -> bool:
    """The test split holds other classes than the training split (metric learning): retrieval, not a probe."""
    return config.data.test_classes is not None and config.data.test_classes != config.data.train_classes


# The command of each kind of Method.evaluation that ``sslsec-pretrain --probe`` runs (the study's are
# sslsec.analysis.scoring.SCORERS): (config, backbone, output directory, label, source) -> writes the scores file.
EVALUATIONS = {"linear_probe": _probe, "retrieval": _retrieval, "verification": _verification}


def diagnose_main(argv: Optional[Sequence[str]] = None) -> None:
    """``sslsec-diagnose``: projection-norm and pair-cosine diagnostics of a run; writes PNGs and
    ``diagnostics_seedN.json``, one set per seed."""
    parser = _parser("sslsec-diagnose", "Projection norms and positive/negative cosines of a pretraining run; "
                     "trainer.seed picks the images and their views (default: the run's seed); writes "
                     "diagnostics_seedN.json, projection_norms_seedN.png and pair_cosines_seedN.png into the run "
                     "directory.", "trainer.seed=1 data.root=/elsewhere")
    parser.add_argument("--run", type=Path, metavar="RUN_DIR", required=True, help="a pretraining run directory")
    parser.add_argument("--n", type=int, default=1024, help="test images to embed (default 1024)")
    parser.add_argument("--overwrite", action="store_true", help="replace diagnostics_seedN.json (and its PNGs) "
                        "where it holds the diagnostics of other settings (without it, the command refuses to)")
    args = _parse(parser, argv)
    with _exit_on_user_error(parser.prog):
        from sslsec.runs import finished_run

        finished_run(args.run)  # before the imports of the work: a wrong path is a one-second error
        from sslsec.analysis.diagnostics import diagnose_run

        result = diagnose_run(args.run, args.overrides, n=args.n, overwrite=args.overwrite)
    print(f"{result['method']} on {result['dataset']}, {result['n_images']} test images, two views each")
    print(f"  projection norm  mean {result['norm_mean']:.3f}  std {result['norm_std']:.3f}  "
          f"std/mean {result['norm_std_over_mean']:.3f}")
    print(f"  cosine positive  mean {result['positive_cosine_mean']:+.3f}  std {result['positive_cosine_std']:.3f}")
    print(f"  cosine negative  mean {result['negative_cosine_mean']:+.3f}  std {result['negative_cosine_std']:.3f}")
    print(f"wrote {', '.join(result['histograms'])} and {result['json']} into {args.run}")


def pretrain_main(argv: Optional[Sequence[str]] = None) -> None:
    """``sslsec-pretrain``: SimCLR / MoCo pretraining or metric learning with SEC; ``--probe`` evaluates the result."""
    parser = _parser("sslsec-pretrain", "Contrastive pretraining (SimCLR or MoCo v2) or deep metric learning with the "
                     "Spherical Embedding Constraint. Run it with python, or with accelerate launch / torchrun for "
                     "several processes.", "loss.sec_weight=1.0 trainer.epochs=5 output_dir=runs/x")
    parser.add_argument("--config", type=Path, help="config YAML (default: the built-in defaults)")
    parser.add_argument("--probe", action="store_true", help="evaluate the result as its method is scored "
                        "(Method.evaluation, as the study does): the linear probe and kNN (SimCLR, MoCo, BYOL, "
                        "SimSiam), retrieval (sslsec-retrieval; method: metric) or face verification "
                        "(sslsec-verification; method: face)")
    args = _parse(parser, argv)
    with _exit_on_user_error(parser.prog, "no checkpoint was written now (training checkpoints at "
                             "Ctrl-C only between its steps)"):
        config = load_config(args.config, args.overrides)
        from accelerate import PartialState

        from sslsec.engine import pretrain
        from sslsec.runs import RunPaths, load_run

        with _nothing_left_on_data_error(Path(config.output_dir)):
            run_dir = pretrain(config)
        if args.probe and RunPaths(run_dir).finished():
            from sslsec.analysis.scoring import evaluation

            config, backbone = load_run(run_dir)
            kind = evaluation(config.method)  # the study's rule: the method's Method.evaluation
            if kind not in EVALUATIONS:
                raise ConfigError(f"--probe has no command for method={config.method}'s evaluation {kind!r}; "
                                  f"it scores {', '.join(EVALUATIONS)}")
            EVALUATIONS[kind](config, backbone, run_dir, f"{config.model.backbone} ({run_dir})",
                              RunPaths(run_dir).backbone)
    PartialState().destroy_process_group()


@contextlib.contextmanager
def _nothing_left_on_data_error(output_dir: Path) -> Iterator[None]:
    """A run that stops on its data (a corrupt image, found in the middle of an epoch after ``config.yaml`` was
    written) before its first checkpoint leaves nothing behind: what this invocation added to ``output_dir`` (or
    ``output_dir`` itself, if it made it) is removed. A run with a checkpoint is kept, to be resumed."""
    from accelerate import PartialState

    from sslsec.data import DatasetError
    from sslsec.runs import RunPaths

    before = set(output_dir.iterdir()) if output_dir.is_dir() else None
    try:
        yield
    except DatasetError:
        if PartialState().is_main_process and output_dir.is_dir() and not RunPaths(output_dir).started():
            for path in [output_dir] if before is None else sorted(set(output_dir.iterdir()) - before):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise


def study_main(argv: Optional[Sequence[str]] = None) -> None:
    """``sslsec-study``: none / SEC / SEC-EMA / L2 over seeds, each trained and scored; prints the table."""
    parser = _parser("sslsec-study", "The SEC study: train every variant x seed into output_dir/VARIANT_seedN, then "
                     "score it as its method is: the linear probe, kNN and norm diagnostics (SimCLR, MoCo, BYOL, "
                     "SimSiam), or retrieval on the validation and test splits and the embedding-norm spread (method: "
                     "metric); writes study.md, study.json and the plots (study_knn.png and study_norms.png, or "
                     "study_recall.png) into output_dir. The variants take their weights from the config: "
                     "loss.sec_weight (the sec variants), loss.sec_momentum (sec_ema; default 0.1), "
                     "loss.norm_penalty_weight (l2; default 0.01), and loss.sec_schedule. Finished runs are reused and "
                     "interrupted ones resumed. Run it with python, or with accelerate launch / torchrun for several "
                     "processes.",
                     "trainer.epochs=4 loss.sec_weight=1.0 loss.norm_penalty_weight=0.01 output_dir=runs/study")
    parser.add_argument("--config", type=Path, help="base config YAML (default: the built-in defaults)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default: {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--seeds", type=int, default=3, help="runs per variant, trainer.seed=0..SEEDS-1 (default 3)")
    parser.add_argument("--diagnostics-n", type=int, default=1024,
                        help="test images embedded for the norm diagnostics (default 1024)")
    args = _parse(parser, argv)
    variants = _names(args.variants)
    with _exit_on_user_error(parser.prog, "finished runs are kept, and a rerun resumes the others"):
        load_config(args.config, args.overrides)  # a typo in a key: one line before the study's imports
        from accelerate import PartialState

        from sslsec.analysis.study import run_study, summarize_study

        rows = run_study(args.config, variants, args.seeds, args.overrides, diagnostics_n=args.diagnostics_n)
    if PartialState().is_main_process:
        print("\n" + summarize_study(rows), end="")
    PartialState().destroy_process_group()


def metric_study_main(argv: Optional[Sequence[str]] = None) -> None:
    """``sslsec-metric-study``: the metric-learning table, losses x none / L2 / SEC over seeds, weights chosen on
    validation; prints the table."""
    parser = _parser("sslsec-metric-study", "The SEC paper's metric-learning table: for each loss (metric.loss), first "
                     "the SEC and L2 weights, each the candidate of highest validation MAP@R on seed 0 (runs in "
                     "OUTPUT_DIR/LOSS/choice/), then sslsec-study of the variants over the seeds at those weights (in "
                     "OUTPUT_DIR/LOSS/); writes metric_study.md, metric_study.json and metric_study_recall.png into "
                     "output_dir. Finished runs are reused and interrupted ones resumed.",
                     "data.train_limit=2000 trainer.epochs=3 output_dir=runs/dml_table")
    parser.add_argument("--config", type=Path, required=True, help="a method: metric config YAML "
                        "(configs/dml_fmnist.yaml)")
    parser.add_argument("--losses", default=",".join(METRIC_DEFAULT_LOSSES),
                        help=f"comma-separated metric.loss values (default: {','.join(METRIC_DEFAULT_LOSSES)})")
    parser.add_argument("--variants", default=",".join(METRIC_DEFAULT_VARIANTS),
                        help=f"comma-separated study variants (default: {','.join(METRIC_DEFAULT_VARIANTS)})")
    parser.add_argument("--seeds", type=int, default=3, help="runs per variant, trainer.seed=0..SEEDS-1 (default 3)")
    for variant, weights in METRIC_DEFAULT_WEIGHTS.items():
        parser.add_argument(f"--{variant}-weights", default=",".join(map(str, weights)),
                            help=f"comma-separated candidate {variant} weights (default: "
                            f"{','.join(map(str, weights))}); an empty string keeps the config's")
    args = _parse(parser, argv)
    with _exit_on_user_error(parser.prog, "finished runs are kept, and a rerun resumes the others"):
        load_config(args.config, args.overrides)  # a typo in a key: one line before the study's imports
        from accelerate import PartialState

        from sslsec.analysis.metric_study import run_metric_study, summarize_metric_study

        weights = {variant: _floats(getattr(args, f"{variant}_weights"), f"--{variant}-weights")
                   for variant in METRIC_DEFAULT_WEIGHTS}
        results = run_metric_study(args.config, _names(args.losses), args.seeds, args.overrides,
                                   variants=_names(args.variants), weights={v: w for v, w in weights.items() if w})
    if PartialState().is_main_process:
        print("\n" + summarize_metric_study(results), end="")
    PartialState().destroy_process_group()


def _names(text: str) -> List[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _floats(text: str, flag: str) -> List[float]:
    try:
        return [float(value) for value in _names(text)]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers, e.g. 0.1,1.0; got {text!r}") from None
