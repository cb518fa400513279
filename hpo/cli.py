"""`hpo` command line: sub-commands kept in one dict, errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import yaml

from hpo.spec import Study, StudyError, load_study, resolved
from trainables import ALLOW_CUSTOM_ENV, CustomTrainableError, DatasetError

EXIT_USAGE = 2


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _seed_list(text: str) -> list[int]:
    try:
        return seed_list(text)
    except StudyError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--seeds: ")) from None


def _variant(text: str):
    from hpo.retrain_compare import parse_variant

    try:
        return parse_variant(text)
    except StudyError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--variant {text}: ")) from None


def _sizes(text: str) -> list[int | None]:
    from hpo.retrain_compare import parse_sizes

    try:
        return parse_sizes(text)
    except StudyError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--labels-per-class: ")) from None


def seed_list(text: str) -> list[int]:
    """Seeds as `0,1,2`, `0-49` (both ends included) or a mix (`0-4,7`)."""
    seeds: list[int] = []
    for part in _csv_list(text):
        low, dash, high = part.partition("-")
        try:
            bounds = (int(low), int(high)) if dash and low else (int(part), int(part))
        except ValueError:
            raise StudyError(
                f"--seeds: expected integers or LOW-HIGH ranges, e.g. 0-49 or 0,1, got {text!r}"
            ) from None
        if bounds[0] > bounds[1]:
            raise StudyError(f"--seeds: {part} is an empty range (expected LOW-HIGH, LOW ≤ HIGH)")
        seeds += [s for s in range(bounds[0], bounds[1] + 1) if s not in seeds]
    if not seeds:
        raise StudyError(f"--seeds: no seed in {text!r}")
    return seeds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _assignment(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), yaml.safe_load(value)


def cmd_validate(args: argparse.Namespace) -> int:
    from hpo.strategies import STRATEGIES

    study = load_study(args.file)

    def plans(study: Study) -> dict:
        return {s: STRATEGIES[s].plan(study, study.seeds[0]).describe() for s in study.strategies}

    shown: dict = {"study": resolved(study)}
    if study.compare:  # each combination of levels runs as a study of its own
        from hpo.compare import variants

        shown["variants"] = {
            v.label: {
                "fixed": v.study.fixed,
                "space": resolved(v.study)["space"],
                **({"uses": v.sources} if v.sources else {}),
                "plans": plans(v.study),
            }
            for v in variants(study)
        }
    else:
        shown["plans"] = plans(study)
    print(yaml.safe_dump(shown, sort_keys=False), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hpo.leaderboard import format_leaderboard
    from hpo.progress import StudyProgress
    from hpo.records import read_study_record
    from hpo.runner import StudyRunner

    compared = load_study(args.file).compare
    progress = StudyProgress("quiet" if args.quiet else "auto")
    options = {"progress": progress, "parallel_runs": args.parallel_runs, "mlflow": args.mlflow}
    with progress:
        if compared:
            from hpo.compare_run import CompareRunner

            runner = CompareRunner(args.file, args.results, args.strategies, args.seeds, **options)
            runner.run(address=args.address, fresh=args.fresh)
        else:
            runner = StudyRunner(args.file, args.results, args.strategies, args.seeds, **options)
            record = runner.run(address=args.address, fresh=args.fresh)
    if compared:
        for label, variant in runner.runners.items():
            print(f"\n{label}")
            print(format_leaderboard(read_study_record(variant.directory), variant.trials()))
    else:
        print()
        print(format_leaderboard(record, runner.trials()))
    if not args.quiet:
        print(f"\nresults: {runner.directory}")
    report = runner.directory / "report" / "index.html"
    if runner.ran_any or not report.exists():  # a finished study's folder is left untouched
        from hpo.report import build_report

        try:
            report = build_report(runner.directory)
        except StudyError as error:  # e.g. every trial errored: the runs are still saved
            print(f"report:  not written ({error})")
            return 0
    if not args.quiet:
        print(f"report:  {report}")
    return 0


def cmd_tabulate(args: argparse.Namespace) -> int:
    from hpo.tabulate import tabulate

    tabulate(
        args.file,
        args.results,
        configs=args.configs,
        seeds=args.seeds,
        sample_seed=args.sample_seed,
        fresh=args.fresh,
        address=args.address,
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from hpo.replay.runs import replay

    folder = replay(
        args.file,
        table=args.table,
        results_root=args.results,
        seeds=seed_list(args.seeds) if args.seeds else None,
        strategies=args.strategies,
        workers=args.workers,
        charge_decisions=args.charge_decisions,
    )
    from hpo.report import build_report  # as hpo run does, the replay ends with its report

    print(f"report:  {build_report(folder)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hpo.export import export

    written = export(
        args.results_dir,
        strategy=args.strategy,
        seed=args.seed,
        fmt=args.format,
        out=args.out,
        as_study_file=args.as_study,
    )
    print(written)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from hpo.retrain import retrain

    if args.variant:
        from hpo.retrain_compare import compare_retrains

        compare_retrains(
            args.file,
            args.variant,
            args.labels_per_class,
            epochs=args.epochs,
            seeds=args.seeds,
            out=args.out,
            address=args.address,
            overrides=dict(args.set or []),
        )
        return 0
    sizes = args.labels_per_class or []
    if len(sizes) > 1:
        raise StudyError("--labels-per-class: several sizes need --variant (a comparison)")
    out = retrain(
        args.file,
        epochs=args.epochs,
        seeds=args.seeds,
        out=args.out,
        train_only=args.train_only,
        address=args.address,
        overrides=dict(args.set or []),
        dataset={"labels_per_class": sizes[0]} if sizes else None,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    # a function trainable's evaluate() names its own test metrics
    measured = metrics.get("test") or {"test_accuracy": metrics.get("test_accuracy")}
    for name, value in measured.items():
        if value and value["mean"] is not None:
            print(
                f"{name.replace('_', ' ')} {value['mean']:.4f} ± {value['std']:.4f} "
                f"over {len(args.seeds)} seeds"
            )
    print(f"results: {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from hpo.retrain import predict

    measured = predict(args.model_dir, args.dataset)
    print(
        f"test accuracy {measured['test_accuracy']:.4f} on {measured['samples']} held-out "
        f"{measured['dataset']} samples (split seed {measured['split_seed']})"
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import pandas as pd

    from hpo.inspect import IMAGENET_PREFIX, inspect, load_subject, robustness
    from trainables import WeightsError

    try:
        subject = load_subject(args.model_dir, args.image)
    except WeightsError as error:  # ImageNet weights not in the torch hub cache: say where
        raise StudyError(str(error)) from None
    if args.out:
        out = args.out
    elif args.model_dir.startswith(IMAGENET_PREFIX):
        out = f"inspect-{args.model_dir.removeprefix(IMAGENET_PREFIX)}"
    else:
        out = os.path.join(args.model_dir, "inspect")
    written = inspect(subject, out)
    summary = robustness(pd.read_csv(written / "predictions.csv", dtype={"name": str}))
    print(
        f"top-1 {summary['top1']} ({summary['probability']:.3f}), kept under "
        f"{summary['kept']} of {summary['transformations']} transformations"
        + (f" (changed by {', '.join(summary['flipped_by'])})" if summary["flipped_by"] else "")
    )
    print(f"written: {written / 'index.html'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from hpo import bench

    if args.which == "overhead":
        bench.overhead(trials=args.trials, epochs=args.epochs, scaling=args.scaling)
    elif args.which == "feature-cache":
        bench.feature_cache(epochs=args.epochs)
    elif args.which == "batched":
        bench.batched()
    elif args.which == "strategies":
        bench.strategies(args.results_dir, args.target)
    elif args.which == "ranking":
        bench.ranking(args.results_dir, args.against)
    elif args.which == "parallel-runs":
        bench.parallel_runs(args.study, args.widths, args.address, args.out)
    else:
        bench.memory(args.study)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from hpo.jobs import submit

    job_id = submit(
        args.file, args.address, args.results, args.strategies, allow_custom=args.allow_custom
    )
    print(job_id)
    print(f"follow it: hpo logs {job_id} --address {args.address}")
    print(f"progress:  hpo status {job_id} --address {args.address}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from hpo.jobs import follow_logs

    follow_logs(args.job_id, args.address)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpo.status import study_status

    target = Path(args.target)
    if target.is_file():  # a study file: its folder under --results
        target = Path(args.results) / load_study(target, trusted=True).name
    elif not target.exists() and ("/" in args.target or target.suffix in (".yaml", ".yml")):
        raise StudyError(f"{target}: no such results folder or study file")
    elif not target.exists():  # a Ray job id
        from hpo.jobs import job_info

        info = job_info(args.target, args.address)
        print(f"job {args.target}: {info['status']} {info['message']}".rstrip())
        study, root = info["metadata"].get("hpo_study"), info["metadata"].get("hpo_results")
        if not study or not root:
            raise StudyError(f"{args.target}: not a job submitted by hpo submit")
        target = Path(root) / study
        if not (target / "study.json").exists():
            print(f"{target}: no results yet (or not reachable from this machine)")
            return 0
    print(study_status(target).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from hpo.status import list_studies

    table = list_studies(args.results_root)
    print(table.to_string(index=False) if not table.empty else f"no studies in {args.results_root}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hpo.records import read_study_record
    from hpo.report import build_report, replay_summary

    report = build_report(args.results_dir)
    line = replay_summary(read_study_record(args.results_dir))
    if line:  # a replay says so first, as its report's first line does
        print(line)
    print(report)
    return 0


def _study_file(command: argparse.ArgumentParser) -> None:
    command.add_argument("file", help="study YAML file")
    _allow_custom(command)


def _allow_custom(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--allow-custom",
        action="store_true",
        help="accept a custom trainable named as package.module:function (imports and runs "
        "that code; study files cannot do so on their own)",
    )


def _data_dir(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--data-dir",
        metavar="DIR",
        help="root of torchvision-format dataset files where the dataset section sets no "
        "data_dir (sets HPO_DATA_DIR; default: $HPO_DATA_DIR, else ./data)",
    )


def _run_arguments(command: argparse.ArgumentParser) -> None:
    _study_file(command)
    command.add_argument("--strategies", type=_csv_list, help="subset, e.g. random,asha")
    command.add_argument("--seeds", type=_seed_list, help="subset, e.g. 0,1")
    command.add_argument("--results", default="results", help="results root (default: results)")
    command.add_argument("--address", help="existing Ray cluster (auto, host:port, ray://…)")
    command.add_argument("--fresh", action="store_true", help="discard these runs and start over")
    command.add_argument(
        "--parallel-runs",
        type=_positive_int,
        metavar="N",
        help="strategy × seed runs at once, sharing the cluster (default: the study's, 1)",
    )
    command.add_argument(
        "--quiet", action="store_true", help="print only errors and the final leaderboard"
    )
    command.add_argument(
        "--mlflow",
        nargs="?",
        const=True,
        default=False,
        metavar="TRACKING_URI",
        help="log each trial as an MLflow run (default store: inside the results folder; "
        "needs pip install 'hpo[mlflow]')",
    )
    _data_dir(command)


def _replay_arguments(command: argparse.ArgumentParser) -> None:
    _study_file(command)
    command.add_argument("--table", help="the table folder (default: <results>/<study>/table)")
    command.add_argument("--seeds", help="replay seeds, e.g. 0-49 (default: the study's)")
    command.add_argument("--strategies", type=_csv_list, help="subset, e.g. random,asha")
    command.add_argument(
        "--workers", type=int, help="simulated workers (default: max_concurrent_trials)"
    )
    command.add_argument(
        "--charge-decisions",
        action="store_true",
        help="add the searchers' and schedulers' measured decision time to the clock",
    )
    command.add_argument(
        "--results", default="results", help="results root: writes <results>/<study>/replay"
    )


def _tabulate_arguments(command: argparse.ArgumentParser) -> None:
    _study_file(command)
    command.add_argument(
        "--configs", type=int, default=200, help="configurations of the space (default 200)"
    )
    command.add_argument(
        "--seeds",
        type=_seed_list,
        help="training seeds per config, e.g. 0-2 (default: the study's)",
    )
    command.add_argument(
        "--sample-seed", type=int, default=0, help="seed of the configurations' sample"
    )
    command.add_argument("--results", default="results", help="results root (default: results)")
    command.add_argument("--address", help="existing Ray cluster (auto, host:port, ray://…)")
    command.add_argument("--fresh", action="store_true", help="discard the table and start over")
    _data_dir(command)


def _export_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("results_dir", help="a study's results folder, e.g. results/digits_cnn")
    command.add_argument("--strategy", default="best", help="a strategy name, or best (default)")
    command.add_argument("--seed", type=int, help="that strategy's seed (default: its best run)")
    command.add_argument("--format", choices=("yaml", "json"), default="yaml")
    command.add_argument("--out", help="file to write (default: in the results folder)")
    command.add_argument(
        "--as-study", action="store_true", help="write a one-trial study file for hpo run"
    )


def _retrain_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("file", help="a file written by hpo export")
    command.add_argument("--epochs", type=int, help="default: the epoch of the best validation")
    command.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], help="default: 0,1,2")
    command.add_argument("--out", help="output folder (default: beside the export file)")
    command.add_argument(
        "--train-only",
        action="store_true",
        help="train on train only and keep the best-validation epoch (early stopping)",
    )
    command.add_argument("--address", help="existing Ray cluster")
    _allow_custom(command)
    command.add_argument(
        "--set",
        action="append",
        type=_assignment,
        metavar="NAME=VALUE",
        help="replace a hyperparameter of the exported config (YAML value), e.g. weights=none",
    )
    command.add_argument(
        "--variant",
        action="append",
        type=_variant,
        metavar="NAME:[KEY=VALUE,…]",
        help="compare variants of the config, same seeds and epochs, measured at the last "
        "epoch (two or more; the first against the others), e.g. --variant finetuned: "
        "--variant scratch:weights=none,freeze=all",
    )
    command.add_argument(
        "--labels-per-class",
        type=_sizes,
        metavar="N,…",
        help="train on N labelled examples per class, drawn by each seed (e.g. 5,10,all; "
        "several: with --variant, a sweep)",
    )
    _data_dir(command)


def _predict_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("model_dir", help="a folder written by hpo retrain")
    command.add_argument("--dataset", help="dataset name (default: the one it was trained on)")
    _allow_custom(command)
    _data_dir(command)


def _inspect_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "model_dir",
        help="a folder written by hpo retrain, or imagenet:alexnet / imagenet:resnet18 / "
        "imagenet:resnet50 (weights from the torch hub cache)",
    )
    command.add_argument(
        "--image",
        help="index of a test image of the model's dataset (default 0); an image file for "
        "imagenet:NAME",
    )
    command.add_argument(
        "--out", help="output folder (default: MODEL_DIR/inspect, or ./inspect-NAME)"
    )
    _allow_custom(command)
    _data_dir(command)


def _bench_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "which",
        choices=(
            "overhead", "memory", "feature-cache", "batched", "strategies", "ranking",
            "parallel-runs",
        ),
    )  # fmt: skip
    command.add_argument("--trials", type=int, default=16, help="overhead: trials of the job")
    command.add_argument(
        "--epochs", type=int, default=10, help="overhead: epochs per trial; feature-cache: epochs"
    )
    command.add_argument(
        "--scaling", type=_seed_list, default=[16, 64, 256], help="overhead: study sizes"
    )
    command.add_argument(
        "--study", default="studies/digits_cnn.yaml", help="memory, parallel-runs: study file"
    )
    command.add_argument(
        "--widths", type=_seed_list, default=[1, 2, 4], help="parallel-runs: values of N"
    )
    command.add_argument("--address", help="parallel-runs: an existing Ray cluster")
    command.add_argument("--out", help="parallel-runs: results root (default: a temp folder)")
    command.add_argument(
        "--results-dir",
        default="results/digits_cnn",
        help="strategies: a finished study; ranking: a replay (results/<study>/replay)",
    )
    command.add_argument("--against", help="ranking: a real study's results folder to compare")
    command.add_argument(
        "--target", type=float, default=0.98, help="strategies: validation metric to reach"
    )


DASHBOARD = "http://127.0.0.1:8265"


def _submit_arguments(command: argparse.ArgumentParser) -> None:
    _study_file(command)
    command.add_argument(
        "--address", default=DASHBOARD, help=f"the Ray dashboard (job server), default {DASHBOARD}"
    )
    command.add_argument(
        "--results", default="results", help="results root on the cluster (made absolute)"
    )
    command.add_argument("--strategies", type=_csv_list, help="subset, e.g. random,asha")


def _logs_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("job_id", help="the id printed by hpo submit")
    command.add_argument("--address", default=DASHBOARD, help=f"default {DASHBOARD}")


def _status_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "target", help="a results folder (results/NAME), a study file, or a job id of hpo submit"
    )
    command.add_argument("--results", default="results", help="results root for a study file")
    command.add_argument("--address", default=DASHBOARD, help=f"for a job id; default {DASHBOARD}")


def _list_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("results_root", nargs="?", default="results", help="default: results")


def _report_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "results_dir",
        help="a study's results folder (study.json, trials.csv), e.g. results/digits_cnn",
    )


def _to_optuna():
    from hpo import to_optuna

    return to_optuna


Command = tuple[Callable[[argparse.Namespace], int], str, Callable[[argparse.ArgumentParser], None]]
COMMANDS: dict[str, Command] = {
    "validate": (cmd_validate, "check a study file and print it resolved", _study_file),
    "run": (cmd_run, "run every strategy × seed of a study on Ray Tune", _run_arguments),
    "report": (
        cmd_report,
        "write the comparison report (report/index.html) of a study's saved results",
        _report_arguments,
    ),
    "tabulate": (
        cmd_tabulate,
        "record learning curves: N configs × K seeds for max_epochs, for replays",
        _tabulate_arguments,
    ),
    "replay": (
        cmd_replay,
        "simulate every strategy × seed on a recorded table (no training), as a results folder",
        _replay_arguments,
    ),
    "export": (
        cmd_export,
        "write a study's selected config with its provenance",
        _export_arguments,
    ),
    "retrain": (
        cmd_retrain,
        "retrain an exported config and measure it on test",
        _retrain_arguments,
    ),
    "bench": (
        cmd_bench,
        "measure trial throughput, a study's peak memory or the feature cache's speed-up",
        _bench_arguments,
    ),
    "submit": (cmd_submit, "submit a study as a Ray Job; prints its id", _submit_arguments),
    "to-optuna": (
        lambda args: _to_optuna().cmd_to_optuna(args),
        "write every strategy × seed run as an Optuna study (for optuna-dashboard)",
        lambda command: _to_optuna().add_arguments(command),
    ),
    "status": (
        cmd_status,
        "per strategy × seed: state, trials, epochs of the budget, best so far, elapsed",
        _status_arguments,
    ),
    "logs": (cmd_logs, "follow a submitted job's output", _logs_arguments),
    "list": (
        cmd_list,
        "the studies under a results root, with state and last update",
        _list_arguments,
    ),
    "predict": (
        cmd_predict,
        "measure a retrained model on its held-out test set",
        _predict_arguments,
    ),
    "inspect": (
        cmd_inspect,
        "first conv filters, feature maps and top-5 robustness of a model for one image",
        _inspect_arguments,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text, add_arguments) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command][0]
    if getattr(args, "data_dir", None):  # read where datasets load (trainables.data)
        os.environ["HPO_DATA_DIR"] = os.path.abspath(args.data_dir)
    if getattr(args, "allow_custom", False):  # read by trainables.trainable_info (and workers)
        os.environ[ALLOW_CUSTOM_ENV] = "1"
        # The user's module is found from the folder hpo runs in, as `python -m` would (Ray
        # puts that folder on its local workers' path too).
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
    try:
        return handler(args)
    except (StudyError, DatasetError, CustomTrainableError) as error:
        print(f"hpo {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"\nhpo {args.command}: interrupted; finished results are kept, "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
