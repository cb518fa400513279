"""`hpo` command line: sub-commands kept in one dict, errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import yaml

from hpo.spec import StudyError, load_study, resolved

EXIT_USAGE = 2


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def cmd_validate(args: argparse.Namespace) -> int:
    from hpo.strategies import STRATEGIES

    study = load_study(args.file)
    plans = {}
    for name in study.strategies:
        plan = STRATEGIES[name](study, study.seeds[0])
        plans[name] = {"num_samples": plan.num_samples, **plan.notes}
    print(yaml.safe_dump({"study": resolved(study), "plans": plans}, sort_keys=False), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hpo.runner import StudyRunner, format_leaderboard

    runner = StudyRunner(args.file, args.results, strategies=args.strategies, seeds=args.seeds)
    meta = runner.run(address=args.address, fresh=args.fresh)
    print()
    print(format_leaderboard(meta, runner.trials()))
    print(f"\nresults: {runner.directory}")
    report = runner.directory / "report" / "index.html"
    if runner.ran_any or not report.exists():  # a finished study's folder is left untouched
        from hpo.report import build_report

        try:
            report = build_report(runner.directory)
        except StudyError as error:  # e.g. every trial errored: the runs are still saved
            print(f"report:  not written ({error})")
            return 0
    print(f"report:  {report}")
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

    out = retrain(
        args.file,
        epochs=args.epochs,
        seeds=args.seeds,
        out=args.out,
        train_only=args.train_only,
        address=args.address,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    accuracy = metrics["test_accuracy"]
    if accuracy["mean"] is not None:
        seeds = len(args.seeds)
        print(f"test accuracy {accuracy['mean']:.4f} ± {accuracy['std']:.4f} over {seeds} seeds")
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


def cmd_bench(args: argparse.Namespace) -> int:
    from hpo import bench

    if args.which == "overhead":
        bench.overhead(trials=args.trials, epochs=args.epochs, scaling=args.scaling)
    else:
        bench.memory(args.study)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hpo.report import build_report

    print(build_report(args.results_dir))
    return 0


def _study_file(command: argparse.ArgumentParser) -> None:
    command.add_argument("file", help="study YAML file")


def _run_arguments(command: argparse.ArgumentParser) -> None:
    _study_file(command)
    command.add_argument("--strategies", type=_csv_list, help="subset, e.g. random,asha")
    command.add_argument("--seeds", type=_seed_list, help="subset, e.g. 0,1")
    command.add_argument("--results", default="results", help="results root (default: results)")
    command.add_argument("--address", help="existing Ray cluster (auto, host:port, ray://…)")
    command.add_argument("--fresh", action="store_true", help="discard these runs and start over")


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


def _predict_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("model_dir", help="a folder written by hpo retrain")
    command.add_argument("--dataset", help="dataset name (default: the one it was trained on)")


def _bench_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("which", choices=("overhead", "memory"))
    command.add_argument("--trials", type=int, default=16, help="overhead: trials of the job")
    command.add_argument("--epochs", type=int, default=10, help="overhead: epochs per trial")
    command.add_argument(
        "--scaling", type=_seed_list, default=[16, 64, 256], help="overhead: study sizes"
    )
    command.add_argument("--study", default="studies/digits_cnn.yaml", help="memory: study file")


def _report_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "results_dir",
        help="a study's results folder (study.json, trials.csv), e.g. results/digits_cnn",
    )


Command = tuple[Callable[[argparse.Namespace], int], str, Callable[[argparse.ArgumentParser], None]]
COMMANDS: dict[str, Command] = {
    "validate": (cmd_validate, "check a study file and print it resolved", _study_file),
    "run": (cmd_run, "run every strategy × seed of a study on Ray Tune", _run_arguments),
    "report": (
        cmd_report,
        "write the comparison report (report/index.html) of a study's saved results",
        _report_arguments,
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
    "bench": (cmd_bench, "measure trial throughput or a study's peak memory", _bench_arguments),
    "predict": (
        cmd_predict,
        "measure a retrained model on its held-out test set",
        _predict_arguments,
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
    try:
        return handler(args)
    except StudyError as error:
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
