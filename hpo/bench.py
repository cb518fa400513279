"""Trial-throughput and memory benchmarks (`hpo bench overhead`, `hpo bench memory`).

Everything is measured in one process against baselines run in the same process:
Optuna in-process threads and tutorial-style Ray Tune for the scheduling overhead, a bare
PyTorch loop for the training loop's throughput. Figures are printed, never asserted.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SLOTS = 2  # concurrent trials, one CPU each
SPACE = {
    "lr": {"loguniform": {"low": 1.0e-3, "high": 3.0e-2}},
    "dropout": {"uniform": {"low": 0.0, "high": 0.3}},
}


@dataclass
class Measurement:
    name: str
    wall_s: float
    busy_s: float
    trials: int
    slots: int = SLOTS
    startup_s: float | None = None  # Tuner.fit start → first epoch begins

    @property
    def efficiency(self) -> float:
        return self.busy_s / (self.wall_s * self.slots)


def bench_study(name: str, trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": name,
        "trainable": "cnn",
        "dataset": {"name": "digits"},
        "space": SPACE,
        "budget": {"max_epochs": epochs, "total_epochs": trials * epochs},
        "strategies": ["random"],
        "seeds": [0],
        "resources": {"cpu": 1},
        "max_concurrent_trials": SLOTS,
    }


def run_project(trials: int, epochs: int, root: Path, echo: Callable[[str], None]) -> Measurement:
    """This project's runner, random strategy: wall time of the Tuner.fit call."""
    import pandas as pd

    from hpo.runner import StudyRunner

    name = f"bench-{trials}x{epochs}"
    study_file = root / f"{name}.yaml"
    study_file.write_text(yaml.safe_dump(bench_study(name, trials, epochs)))
    record = StudyRunner(study_file, root, echo=echo).run(fresh=True)
    run = record.run("random", 0)
    table = pd.read_csv(root / name / "trials.csv")
    first_epoch_began = (table["report_time"] - table["epoch_time_s"]).min()
    return Measurement(
        "hpo runner (Ray Tune)",
        run.wall_s,
        table["epoch_time_s"].sum(),
        trials,
        startup_s=float(first_epoch_began - run.fit_started),
    )


class _ListReporter:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def restore(self) -> None:
        return None

    def report(self, metrics: dict[str, Any], state: dict | None) -> None:
        self.rows.append(metrics)


def run_optuna(trials: int, epochs: int) -> Measurement:
    """Optuna in-process, n_jobs = slots threads, calling the same model and loop code."""
    import optuna
    import torch

    from trainables.data import load_dataset
    from trainables.loop import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_dataset("digits", 0.2, 0.2, 0)
    torch.set_num_threads(1)
    busy: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        config = {
            "lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "seed": 0,
        }
        reporter = _ListReporter()
        train("cnn", config, data, reporter, max_epochs=epochs)
        busy.append(sum(r["epoch_time_s"] for r in reporter.rows))
        return max(r["val_accuracy"] for r in reporter.rows)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    began = time.perf_counter()
    study.optimize(objective, n_trials=trials, n_jobs=SLOTS)
    return Measurement("Optuna in-process threads", time.perf_counter() - began, sum(busy), trials)


def tutorial_trainable(config: dict[str, Any]) -> None:
    """Ray Tune written the tutorial way: data loaded inside, checkpoint every epoch."""
    from trainables.data import load_dataset
    from trainables.loop import train
    from trainables.tune_trial import TuneReporter

    data = load_dataset("digits", 0.2, 0.2, 0)
    train("cnn", config, data, TuneReporter(), max_epochs=config["epochs"], threads=1)


def run_tutorial_ray(trials: int, epochs: int, root: Path) -> Measurement:
    from ray import tune

    from hpo.space import tune_space
    from hpo.spec import Param

    space = tune_space({k: Param.model_validate(v) for k, v in SPACE.items()}, {})
    tuner = tune.Tuner(
        tune.with_resources(tutorial_trainable, {"cpu": 1}),
        param_space={**space, "epochs": epochs, "seed": 0},
        tune_config=tune.TuneConfig(
            num_samples=trials, max_concurrent_trials=SLOTS, metric="val_accuracy", mode="max"
        ),
        run_config=tune.RunConfig(storage_path=str(root), name="tutorial", verbose=0),
    )
    began = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - began
    busy = sum(r.metrics_dataframe["epoch_time_s"].sum() for r in grid)
    return Measurement("Ray Tune, tutorial style", wall, busy, trials)


def loop_throughput(epochs: int = 20, repeats: int = 4) -> tuple[float, float]:
    """Training samples/s of the project's epoch function and of a bare PyTorch loop,
    same model, batch size and one thread. Each measurement starts after a warm-up epoch,
    and the two alternate which goes first, so warm-up and drift hit both alike."""
    import torch
    from torch import nn

    from trainables import CNN_DEFAULTS
    from trainables.data import load_dataset
    from trainables.loop import build_model, make_optimizer, train_epoch

    torch.set_num_threads(1)
    data = load_dataset("digits", 0.2, 0.2, 0)
    config = dict(CNN_DEFAULTS)

    def bare_epoch(model, optimizer) -> None:
        model.train()
        order = torch.randperm(len(data.train))
        for begin in range(0, len(order), config["batch_size"]):
            index = order[begin : begin + config["batch_size"]]
            loss = nn.functional.cross_entropy(model(data.train.x[index]), data.train.y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def rate(run_epoch: Callable[[Any, Any], Any]) -> float:
        torch.manual_seed(0)
        model = build_model("cnn", config, data)
        optimizer = make_optimizer(model, config)
        run_epoch(model, optimizer)  # warm-up: first-call allocations are not throughput
        began = time.perf_counter()
        for _ in range(epochs):
            run_epoch(model, optimizer)
        return epochs * len(data.train) / (time.perf_counter() - began)

    ours, bare = [], []
    for repeat in range(repeats):
        pair = [(ours, lambda m, o: train_epoch(m, o, data.train, config)), (bare, bare_epoch)]
        for rates, run_epoch in pair if repeat % 2 else reversed(pair):
            rates.append(rate(run_epoch))
    return statistics.median(ours), statistics.median(bare)


def overhead(
    trials: int = 16,
    epochs: int = 10,
    scaling: Sequence[int] = (16, 64, 256),
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """All three tables of the overhead benchmark; returns the figures."""
    from hpo.ray_session import init_ray

    quiet = lambda _line: None  # noqa: E731 - the runner's per-run lines are not wanted here
    init_ray()
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as folder:
        root = Path(folder)
        rows = [
            run_project(trials, epochs, root, quiet),
            run_optuna(trials, epochs),
            run_tutorial_ray(trials, epochs, root),
        ]
        optuna_wall = rows[1].wall_s
        echo(f"\nJob: {trials} trials x {epochs} epochs, CNN on digits, {SLOTS} slots of 1 CPU")
        echo(f"{'way':<28} {'wall s':>8} {'busy s':>8} {'efficiency':>10} {'wall / Optuna':>13}")
        for row in rows:
            echo(
                f"{row.name:<28} {row.wall_s:>8.1f} {row.busy_s:>8.1f} {row.efficiency:>10.2f}"
                f" {row.wall_s / optuna_wall:>13.2f}"
            )
        ours = rows[0]
        steady = ours.busy_s / ((ours.wall_s - ours.startup_s) * ours.slots)
        echo(
            f"hpo runner: {ours.startup_s:.1f} s from Tuner.fit to the first epoch (new Ray "
            f"worker processes importing torch and Ray Tune); efficiency after that {steady:.2f}"
        )
        ours, bare = loop_throughput()
        echo("\nTraining loop throughput (1 thread, batch 64)")
        echo(f"{'loop':<28} {'samples/s':>10} {'ratio':>8}")
        echo(f"{'trainables.loop':<28} {ours:>10.0f} {ours / bare:>8.3f}")
        echo(f"{'bare PyTorch':<28} {bare:>10.0f} {1.0:>8.3f}")
        per_trial = {}
        echo(f"\nStudy size: project runner, random strategy, {epochs} epochs per trial")
        echo(
            f"{'trials':>7} {'wall s':>8} {'s / trial':>10} {'efficiency':>10} {'vs smallest':>12}"
        )
        for count in scaling:
            measured = run_project(count, epochs, root, quiet)
            per_trial[count] = measured.wall_s / count
            echo(
                f"{count:>7} {measured.wall_s:>8.1f} {per_trial[count]:>10.3f}"
                f" {measured.efficiency:>10.2f} {per_trial[count] / per_trial[scaling[0]]:>12.2f}"
            )
    return {"rows": rows, "loop": (ours, bare), "per_trial": per_trial}


def memory(study_file: str | Path, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Peak memory of a whole study (driver + every Ray process), sampled twice a second.

    PSS splits shared pages (torch's libraries mapped by every worker) between the
    processes that share them, so their sum is the machine's real use; the RSS sum
    counts shared pages once per process and is an upper bound.
    """
    import psutil

    from hpo.runner import StudyRunner

    me = psutil.Process()
    peak = {"pss_gb": 0.0, "rss_gb": 0.0, "processes": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pss = rss = 0
            processes = [me, *me.children(recursive=True)]
            for process in processes:
                try:
                    info = process.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                pss += getattr(info, "pss", info.rss)
                rss += info.rss
            peak["pss_gb"] = max(peak["pss_gb"], pss / 2**30)
            peak["rss_gb"] = max(peak["rss_gb"], rss / 2**30)
            peak["processes"] = max(peak["processes"], len(processes))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="hpo-bench-memory-") as folder:
        began = time.perf_counter()
        StudyRunner(study_file, folder, echo=echo).run()
        wall = time.perf_counter() - began
    stop.set()
    sampler.join()
    echo(
        f"\n{study_file}: peak PSS {peak['pss_gb']:.2f} GiB (sum of RSS {peak['rss_gb']:.2f} GiB) "
        f"over {peak['processes']} processes, {wall:.0f} s"
    )
    return {**peak, "wall_s": wall}


def feature_cache(epochs: int = 5, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Head-only fine-tuning of ResNet-18 (digits at 32×32, one thread): backbone features
    computed once per trial versus recomputed every epoch; same model, data and seed."""
    import torch

    from trainables.data import load_dataset
    from trainables.loop import train

    torch.set_num_threads(1)
    data = load_dataset("digits", 0.2, 0.2, 0, scale="unit")
    timings: dict[str, float] = {}
    accuracy: dict[str, float] = {}
    for cache in (False, True):
        config = {"freeze": "head", "image_size": 32, "cache_features": cache, "seed": 0}
        reporter = _ListReporter()
        began = time.perf_counter()
        train("resnet_transfer", config, data, reporter, max_epochs=epochs, threads=1)
        timings[str(cache)] = time.perf_counter() - began
        accuracy[str(cache)] = reporter.rows[-1]["val_accuracy"]
    echo(f"\nHead-only ResNet-18 on digits (32×32, {len(data.train)} training images, 1 thread)")
    echo(f"{'features':<28} {'s total':>8} {'s / epoch':>10} {'val acc':>8}")
    for cache, label in (("False", "recomputed every epoch"), ("True", "cached once per trial")):
        echo(
            f"{label:<28} {timings[cache]:>8.2f} {timings[cache] / epochs:>10.3f}"
            f" {accuracy[cache]:>8.4f}"
        )
    speedup = timings["False"] / timings["True"]
    same = abs(accuracy["False"] - accuracy["True"]) < 1e-9
    echo(
        f"speed-up {speedup:.1f}x over {epochs} epochs; final val accuracy "
        f"{'identical' if same else 'DIFFERS'} (same model and seed)"
    )
    return {"recomputed_s": timings["False"], "cached_s": timings["True"], "speedup": speedup}


def strategies(
    study_dir: str | Path, target: float, echo: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Per strategy of a finished study (mean ± std over its seeds): best validation and
    test metric of the selected config, cumulative epochs until the run's best-so-far
    validation metric first reached `target`, decision and wall seconds, and how its
    trials were proposed. Prints a Markdown table (docs/benchmarks.md)."""
    import pandas as pd

    from hpo.report.tables import test_metric_name
    from hpo.results import load_results
    from hpo.strategies import strategy_order

    results = load_results(study_dir)
    metric, higher = results.metric, results.mode == "max"
    trials = results.trials
    rows = []
    runs = list(results.record.runs.values())
    for name in strategy_order({run.strategy for run in runs}):
        mine = [run for run in runs if run.strategy == name and run.best is not None]
        reached = []
        for run in mine:
            frame = trials[(trials["strategy"] == name) & (trials["seed"] == run.seed)]
            frame = frame.sort_values("cum_epochs")
            best = frame[metric].cummax() if higher else frame[metric].cummin()
            hit = frame["cum_epochs"][best >= target if higher else best <= target]
            reached.append(int(hit.iloc[0]) if not hit.empty else None)
        mine_trials = trials[trials["strategy"] == name]
        proposed = (
            mine_trials.groupby(["seed", "trial_id"])["proposed_by"].first().value_counts()
            if "proposed_by" in mine_trials
            else pd.Series(dtype=int)
        )
        rows.append(
            {
                "strategy": name,
                "seeds": len(mine),
                "val": _mean_std([run.best.value for run in mine]),
                "test": _mean_std([run.best.test.get(test_metric_name(metric)) for run in mine]),
                "epochs_to_target": reached,
                "decision_s": _mean_std([run.decision_s for run in mine], 2),
                "wall_s": _mean_std([run.wall_s for run in mine], 1),
                "proposed_by": ", ".join(f"{k} {v}" for k, v in proposed.items()),
            }
        )
    echo(
        f"| strategy | seeds | best {metric} | test | epochs to {metric} {'≥' if higher else '≤'} "
        f"{target} (per seed) | decision s | wall s | trials by proposal (all seeds) |"
    )
    echo("|---|---|---|---|---|---|---|---|")
    for row in rows:
        epochs = ", ".join("not reached" if e is None else str(e) for e in row["epochs_to_target"])
        echo(
            f"| {row['strategy']} | {row['seeds']} | {row['val']} | {row['test']} | {epochs} | "
            f"{row['decision_s']} | {row['wall_s']} | {row['proposed_by']} |"
        )
    return rows


def ranking(
    replay_dir: str | Path,
    real_dir: str | Path | None = None,
    subset: int = 3,
    draws: int = 2000,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """How far a few-seed ranking of the strategies is from a many-seed replay's.

    Strategies are ranked within each seed by their run's best validation metric (1 =
    best, ties share) and averaged over seeds. Prints the replay's mean ranks; Kendall's
    tau between them and those of `draws` random `subset`-seed subsets of the same replay
    (how far a `subset`-seed study on the same curves typically lands); and, given a real
    study's folder, tau between the replay's and the real study's mean ranks."""
    import numpy as np
    from scipy.stats import kendalltau

    replay_ranks = _seed_ranks(replay_dir)
    full = replay_ranks.mean()
    generator = np.random.default_rng(0)
    taus = []
    for _ in range(draws):
        seeds = generator.choice(len(replay_ranks), size=subset, replace=False)
        taus.append(kendalltau(full, replay_ranks.iloc[seeds].mean()).statistic)
    taus = np.nan_to_num(np.array(taus))  # a subset with all strategies tied has no tau
    result: dict[str, Any] = {
        "replay_mean_ranks": full.round(2).to_dict(),
        "replay_seeds": len(replay_ranks),
        "subset_tau_median": float(np.median(taus)),
        "subset_tau_5_95": (float(np.percentile(taus, 5)), float(np.percentile(taus, 95))),
    }
    echo(f"replay mean rank over {len(replay_ranks)} seeds: " + _ranks_text(full))
    echo(
        f"{subset}-seed subsets of the replay ({draws} draws): Kendall tau with the "
        f"{len(replay_ranks)}-seed ranking median {result['subset_tau_median']:.2f}, "
        f"5–95 % {result['subset_tau_5_95'][0]:.2f} to {result['subset_tau_5_95'][1]:.2f}"
    )
    if real_dir is not None:
        real = _seed_ranks(real_dir).mean().reindex(full.index)
        tau = kendalltau(full, real)
        result.update(real_mean_ranks=real.round(2).to_dict(), real_tau=float(tau.statistic))
        echo("real study mean rank over its seeds: " + _ranks_text(real))
        echo(f"Kendall tau, replay vs real study: {tau.statistic:.2f} (p = {tau.pvalue:.2g})")
    return result


def _seed_ranks(study_dir: str | Path):
    """Per paired seed (rows) and strategy (columns): the strategy's rank by its run's
    best validation metric among that seed's runs, as the report ranks them
    (tables.seed_ranks over many_seeds.paired_seeds)."""
    import pandas as pd

    from hpo.records import read_study_record
    from hpo.report.many_seeds import paired_seeds
    from hpo.report.tables import seed_ranks

    record = read_study_record(study_dir)
    runs = pd.DataFrame(
        [
            {"strategy": run.strategy, "seed": run.seed, "best_val": run.best.value}
            for run in record.runs.values()
            if run.best is not None
        ]
    )
    strategies, seeds = paired_seeds(runs)
    ranks = seed_ranks(runs[runs["seed"].isin(seeds)], record.mode)
    return ranks.pivot(index="seed", columns="strategy", values="rank")[strategies]


def _ranks_text(ranks) -> str:
    return ", ".join(f"{name} {rank:.2f}" for name, rank in ranks.sort_values().items())


def _mean_std(values: Sequence[float | None], digits: int = 4) -> str:
    values = [float(v) for v in values if v is not None]
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def batched(
    runs: int = 100, singles: int = 10, epochs: int = 2, echo: Callable[[str], None] = print
) -> dict[str, float]:
    """The dying-ReLU net (10×2, Adam, batch 64, 3,000 points of |x|, one thread): `runs`
    runs as one batched trial (trainables.pathologies) against `singles` of the same runs
    trained one at a time by the one loop (the mlp trainable); time per run."""
    import torch

    from trainables.data import load_dataset
    from trainables.loop import full_config, run
    from trainables.pathologies import mlp_config, run_seeds

    torch.set_num_threads(1)
    data = load_dataset("fn_abs", 0.2, 0.2, 0, scale="unit")
    config = {"runs": runs, "depth": 10, "width": 2, "batch_size": 64, "lr": 1e-3}
    began = time.perf_counter()
    run("batched_mlp", config, data, _ListReporter(), max_epochs=epochs, threads=1)
    per_batched = (time.perf_counter() - began) / runs
    alone = mlp_config(full_config("batched_mlp", config))
    began = time.perf_counter()
    for seed in run_seeds(0, runs)[:singles]:
        run("mlp", {**alone, "seed": seed}, data, _ListReporter(), max_epochs=epochs, threads=1)
    per_single = (time.perf_counter() - began) / singles
    echo(f"\n10x2 nets on |x| ({len(data.train)} points, {epochs} epochs, 1 thread), per run:")
    echo(f"batched ({runs} runs in one trial) {per_batched * 1000:8.1f} ms")
    echo(f"one at a time ({singles} runs)      {per_single * 1000:8.1f} ms")
    echo(f"speed-up {per_single / per_batched:.1f}x (no Ray actor start-up in either)")
    return {"batched_s": per_batched, "single_s": per_single, "speedup": per_single / per_batched}


def parallel_runs(
    study_file: str | Path,
    widths: Sequence[int] = (1, 2, 4),
    address: str | None = None,
    root: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[int, dict[str, float]]:
    """`hpo run STUDY --parallel-runs N` for each N in `widths` (the first is the
    baseline), each in its own process and fresh results folder under `root`: wall time,
    the runs' busy (training) seconds, and how many runs selected the same trial-epoch
    value as the baseline's. On `address` (an existing Ray cluster) when given."""
    import subprocess
    import sys

    from hpo.records import read_study_record

    root = Path(root or tempfile.mkdtemp(prefix="hpo-parallel-"))
    figures: dict[int, dict[str, float]] = {}
    bests: dict[int, dict[str, float]] = {}
    for width in widths:
        results = root / f"parallel-{width}"
        command = [sys.executable, "-m", "hpo.cli", "run", str(study_file), "--quiet"]
        command += ["--results", str(results), "--parallel-runs", str(width), "--fresh"]
        command += ["--address", address] if address else []
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - began
        (record,) = [read_study_record(d) for d in results.iterdir() if d.is_dir()]
        runs = list(record.runs.values())
        bests[width] = {key: run.best.value for key, run in record.runs.items() if run.best}
        figures[width] = {
            "wall_s": wall,
            "busy_s": sum(run.busy_s or 0.0 for run in runs),
            "runs": len(runs),
            "trials": sum(run.trials or 0 for run in runs),
        }
        base, now = figures[widths[0]], figures[width]
        same = sum(bests[width].get(k) == v for k, v in bests[widths[0]].items())
        echo(
            f"--parallel-runs {width}: {now['wall_s']:.0f} s wall "
            f"({base['wall_s'] / now['wall_s']:.2f}x the speed of --parallel-runs {widths[0]}), "
            f"{now['runs']:.0f} runs, {now['trials']:.0f} trials, "
            f"{now['busy_s']:.0f} s of training; best value as at {widths[0]}: "
            f"{same} of {len(bests[widths[0]])} runs"
        )
    echo(f"results: {root}")
    return figures
