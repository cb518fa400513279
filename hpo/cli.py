"""`hpo` command line: sub-commands kept in one dict, errors as one line and exit code 2."""

from __future__ import annotations

import argparse
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
    print(format_leaderboard(meta))
    print(f"\nresults: {runner.directory}")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "validate": (cmd_validate, "check a study file and print it resolved"),
    "run": (cmd_run, "run every strategy × seed of a study on Ray Tune"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("file", help="study YAML file")
        if name == "run":
            command.add_argument("--strategies", type=_csv_list, help="subset, e.g. random,asha")
            command.add_argument("--seeds", type=_seed_list, help="subset, e.g. 0,1")
            command.add_argument(
                "--results", default="results", help="results root (default: results)"
            )
            command.add_argument(
                "--address", help="existing Ray cluster (auto, host:port, ray://…)"
            )
            command.add_argument(
                "--fresh", action="store_true", help="discard these runs and start over"
            )
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
