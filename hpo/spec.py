"""A study file, validated: pydantic models, `load_study(path)`, one-line errors naming fields."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpo.strategies import STRATEGIES
from trainables import (
    DATASET_OPTIONS,
    DATASETS,
    LOADER_OPTIONS,
    RANK_NAMES,
    TRAINABLES,
    CustomTrainableError,
    data_conflict,
    is_custom,
    trainable_info,
)


class StudyError(ValueError):
    """A study that cannot run; the message is one line naming the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low must be < high (got low={self.low}, high={self.high})")
        return self


class LogRange(Range):
    @model_validator(mode="after")
    def _positive(self) -> LogRange:
        if self.low <= 0:
            raise ValueError(f"low must be > 0 (got {self.low})")
        return self


def on_grid(value: float, q: float) -> bool:
    """Whether `value` is a multiple of q, within float tolerance (0.3 / 0.1 is not 3.0)."""
    steps = value / q
    return abs(steps - round(steps)) <= 1e-9 * max(1.0, abs(steps))


class QRange(Range):
    """Multiples of q in [low, high], as `ray.tune.quniform`. low and high must be multiples
    of q themselves: Ray Tune rounds values to multiples of q, Optuna steps by q from low,
    and only then are the two grids the same."""

    q: float

    @model_validator(mode="after")
    def _on_grid(self) -> QRange:
        if not self.q > 0:
            raise ValueError(f"q must be > 0 (got {self.q})")
        for name in ("low", "high"):
            if not on_grid(getattr(self, name), self.q):
                raise ValueError(
                    f"low and high must be multiples of q (got {name}={getattr(self, name)}, "
                    f"q={self.q}): Ray Tune rounds to multiples of q, Optuna steps by q from low"
                )
        return self


class QLogRange(QRange):
    @model_validator(mode="after")
    def _positive(self) -> QLogRange:
        if self.low <= 0:
            raise ValueError(f"low must be > 0 (got {self.low})")
        return self


class IntRange(_Strict):
    """Integers low <= x < high, as `ray.tune.randint`."""

    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low must be < high, high is exclusive (got {self.low}, {self.high})")
        return self


class LogIntRange(IntRange):
    """Integers low <= x < high on a log scale, as `ray.tune.lograndint`."""

    @model_validator(mode="after")
    def _positive(self) -> LogIntRange:
        if self.low <= 0:
            raise ValueError(f"low must be > 0 (got {self.low})")
        return self


# A parameter's domain: exactly one of these fields.
KINDS = ("uniform", "loguniform", "randint", "lograndint", "quniform", "qloguniform", "choice")


class Param(_Strict):
    """One searched hyperparameter: exactly one domain, optionally explicit grid values, and
    optionally a condition (`when: {parent: value}` or `{parent: [values]}`): the parameter
    exists only in trials where every parent choice takes one of the values."""

    uniform: Range | None = None
    loguniform: LogRange | None = None
    randint: IntRange | None = None
    lograndint: LogIntRange | None = None
    quniform: QRange | None = None
    qloguniform: QLogRange | None = None
    choice: list[Any] | None = Field(default=None, min_length=1)
    grid: list[Any] | None = Field(default=None, min_length=1)
    when: dict[str, list[Any]] | None = None

    @field_validator("when", mode="before")
    @classmethod
    def _value_lists(cls, when: Any) -> Any:
        """`{parent: value}` → `{parent: [value]}`; a list already names several values."""
        if not isinstance(when, dict):
            return when
        if not when:
            raise ValueError("expected {parent: value} or {parent: [values]}")
        for parent, values in when.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"{parent}: expected at least one value")
        return {p: v if isinstance(v, list) else [v] for p, v in when.items()}

    @model_validator(mode="after")
    def _one_domain(self) -> Param:
        given = [name for name in KINDS if self.domain(name)]
        if len(given) != 1:
            raise ValueError(
                f"expected exactly one of {', '.join(KINDS)}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.grid is not None:
            outside = [v for v in self.grid if not self.contains(v)]
            if outside:
                raise ValueError(f"grid values {outside} lie outside the {self.kind} domain")
        return self

    def domain(self, name: str) -> Any:
        return getattr(self, name)

    @property
    def kind(self) -> str:
        return next(n for n in KINDS if self.domain(n))

    @property
    def bounds(self) -> Range | IntRange | None:
        """The numeric range of the domain (None for a choice)."""
        return None if self.choice is not None else self.domain(self.kind)

    def contains(self, value: Any) -> bool:
        if self.choice is not None:
            return value in self.choice
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        bounds = self.bounds
        if isinstance(bounds, IntRange):
            return float(value).is_integer() and bounds.low <= value < bounds.high
        if isinstance(bounds, QRange):  # k·q may print as 0.30000000000000004
            slack = 1e-9 * bounds.q
            return on_grid(value, bounds.q) and bounds.low - slack <= value <= bounds.high + slack
        return bounds.low <= value <= bounds.high


class DatasetSpec(_Strict):
    name: str
    # Both 0: no held-out data, every split is the whole set (toy studies of fitting)
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    split_seed: int | None = None  # None: each study seed makes its own split
    # Root of torchvision-format files (mnist, fashion_mnist, cifar10); relative paths are
    # taken from the working directory. None: $HPO_DATA_DIR (hpo --data-dir), else ./data.
    data_dir: str | None = None
    download: bool = False  # let torchvision fetch missing files (needs network)
    path: str | None = None  # image_folder: a folder with one sub-folder of images per class
    image_size: int | None = Field(default=None, ge=8)  # image_folder: resized to this square
    classes: list[int] | None = None  # keep these labels only, relabelled 0..k-1 in this order
    # Few labelled examples: train on this many per class (a seeded, stratified subset of
    # the training split); validation and test stay whole. None: the whole training split.
    labels_per_class: PositiveInt | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
        return name

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None and (len(set(classes)) != len(classes) or len(classes) < 2):
            raise ValueError("expected at least 2 distinct labels")
        if classes is not None and min(classes) < 0:
            raise ValueError("labels are non-negative integers")
        return classes

    @model_validator(mode="after")
    def _fractions(self) -> DatasetSpec:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        if not DATASETS[self.name].splittable and self.val_fraction + self.test_fraction > 0:
            raise _FieldError(
                "dataset.val_fraction",
                f"{self.name} cannot be split: set val_fraction and test_fraction to 0",
            )
        if self.labels_per_class is not None and DATASETS[self.name].task != "classification":
            raise _FieldError(
                "dataset.labels_per_class",
                f"{self.name} has no class labels (a {DATASETS[self.name].task} dataset)",
            )
        if (self.val_fraction == 0) != (self.test_fraction == 0):
            raise ValueError(
                "val_fraction and test_fraction are both above 0, or both 0 (every split "
                "is then the whole set)"
            )
        return self

    @model_validator(mode="after")
    def _options_fit(self) -> DatasetSpec:
        info = DATASETS[self.name]
        for option in info.required:
            if getattr(self, option) is None:
                raise _FieldError(f"dataset.{option}", f"required for {self.name}")
        for option in DATASET_OPTIONS:
            value = getattr(self, option)
            if option not in info.options and value is not None and value is not False:
                users = [name for name, other in DATASETS.items() if option in other.options]
                raise _FieldError(
                    f"dataset.{option}", f"not used by {self.name} (only by {', '.join(users)})"
                )
        return self

    def loader_options(self) -> dict[str, Any]:
        """The keyword options of `trainables.data.load_dataset` this section sets."""
        return {option: getattr(self, option) for option in LOADER_OPTIONS}


class MetricSpec(_Strict):
    name: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"


class Budget(_Strict):
    max_epochs: PositiveInt  # R: epochs of a full-fidelity trial
    min_epochs: PositiveInt = 1  # r: first rung of SHA / ASHA
    reduction_factor: int = Field(default=3, ge=2)  # eta
    total_epochs: PositiveInt  # epochs one strategy-seed run may spend
    time_limit_s: PositiveFloat | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Budget:
        if self.min_epochs > self.max_epochs:
            raise ValueError("min_epochs must be <= max_epochs")
        if self.total_epochs < self.max_epochs:
            raise ValueError("total_epochs must be >= max_epochs (room for one full trial)")
        return self


class Resources(_Strict):
    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)


class Level(_Strict):
    """One level of a compared factor: its name (the factor's value when the factor is a
    hyperparameter) and what it adds to the study's `fixed` and `space`."""

    value: Any
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] = Field(default_factory=dict)
    # Another level of the same factor (other factors equal) whose run of the same strategy
    # and seed this level starts from: its selected model's weights (warm_start), or the
    # learning-rate bounds its range test found (lr_from: sets lr and lr_min).
    warm_start: Any = None
    lr_from: Any = None

    @property
    def name(self) -> str:
        return str(self.value)


class Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    trainable: str
    # None: `trainable` is a user's Ray Tune function trainable, which loads its own data
    dataset: DatasetSpec | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param]
    metric: MetricSpec = MetricSpec()
    budget: Budget
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    resources: Resources = Resources()
    max_concurrent_trials: PositiveInt | None = None
    # Strategy × seed runs at once (`hpo run --parallel-runs` overrides it): each its own
    # Ray Tune experiment with its own max_concurrent_trials, sharing the cluster.
    parallel_runs: PositiveInt = 1
    max_failures: int = Field(default=0, ge=0)
    # Per-strategy searcher/scheduler options, e.g. {optuna: {n_startup_trials: 4}}.
    strategy_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Compared factors: every combination of their levels is tuned separately by every
    # strategy and seed on the same budget (hpo.compare), e.g. {optimizer: [sgd, adam]}.
    compare: dict[str, list[Level]] = Field(default_factory=dict)
    _function: Any = PrivateAttr(default=None)  # see trainable_function

    @field_validator("trainable")
    @classmethod
    def _known_trainable(cls, name: str, info: ValidationInfo) -> str:
        if name in TRAINABLES:
            return name
        if not is_custom(name):
            raise ValueError(
                f"unknown trainable {name!r}; expected one of {sorted(TRAINABLES)} or, with "
                "--allow-custom, a model builder as package.module:function"
            )
        trusted = _trusted(info)
        try:  # saved results (trusted) name it without running it; the Python API was given it
            trainable_info(name, trusted=trusted or bool((info.context or {}).get("function")))
        except CustomTrainableError as error:
            raise ValueError(str(error)) from None
        return name

    @field_validator("compare", mode="before")
    @classmethod
    def _level_lists(cls, compare: Any) -> Any:
        """`factor: [a, b]` or `factor: {a: {fixed: …, space: …}, b: null}` → Level lists."""
        if not isinstance(compare, dict):
            return compare
        return {factor: _levels(levels) for factor, levels in compare.items()}

    @field_validator("compare")
    @classmethod
    def _distinct_levels(cls, compare: dict[str, list[Level]]) -> dict[str, list[Level]]:
        for factor, levels in compare.items():
            if factor in RESERVED_FACTORS:
                raise _FieldError(
                    f"compare.{factor}",
                    f"names a column of the results; expected another name than "
                    f"{', '.join(RESERVED_FACTORS)}",
                )
            names = [level.name for level in levels]
            if len(levels) < 2 or len(set(names)) != len(names):
                raise _FieldError(f"compare.{factor}", "expected at least 2 distinct levels")
            for level in levels:
                for link in ("warm_start", "lr_from"):
                    source = getattr(level, link)
                    if source is not None and (str(source) not in names or source == level.value):
                        raise _FieldError(
                            f"compare.{factor}.{level.name}.{link}",
                            f"expected another level of {factor!r}, one of {names}",
                        )
        return compare

    @model_validator(mode="after")
    def _something_searched(self) -> Study:
        # A study (or a compared level) that searches nothing trains its one configuration
        # once per seed: only grid does that once.
        if not self.space and not self.compare and self.strategies != ["grid"]:
            raise _FieldError(
                "space",
                "must name at least one hyperparameter to search (a study that searches "
                "nothing trains one configuration: expected strategies: [grid])",
            )
        return self

    @model_validator(mode="after")
    def _variants_valid(self, info: ValidationInfo) -> Study:
        """Each combination of compared levels must be a study that can run on its own."""
        for combination in combinations(self) if self.compare else []:
            try:
                variant_study(self, combination, info.context)
            except ValidationError as error:
                raise _FieldError(
                    f"compare[{variant_label(combination)}]", _format(error)
                ) from None
        return self

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in STRATEGIES]
        if unknown:
            raise ValueError(
                f"unknown strategy {unknown[0]!r}; expected some of {list(STRATEGIES)}"
            )
        if len(set(names)) != len(names):
            raise ValueError("strategies are listed twice")
        return names

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError("seeds must be distinct non-negative integers")
        return seeds

    @property
    def runs_function(self) -> bool:
        """Whether the trainable is a user's Ray Tune function (no dataset section)."""
        return self.dataset is None

    @model_validator(mode="after")
    def _kind_of_trainable(self, info: ValidationInfo) -> Study:
        """No dataset: a user's function trainable, which takes only its config; the
        registered trainables and model builders train on the study's dataset."""
        if self.dataset is not None:
            return self
        if not is_custom(self.trainable):
            raise _FieldError(
                "dataset",
                f"required for trainable {self.trainable!r} (only a Ray Tune function "
                "trainable, package.module:function with --allow-custom, loads its own data)",
            )
        if _trusted(info):
            return self  # saved results: never import the user's code to read them
        problem = function_problem(self.trainable, info.context.get("function"))
        if problem:
            raise _FieldError("trainable", problem)
        return self

    @model_validator(mode="after")
    def _fits_trainable(self) -> Study:
        if self.runs_function:
            return self  # any hyperparameter names, any metric it reports
        info = trainable_info(self.trainable, trusted=True)  # the validator above gated it
        for section, names in (("fixed", self.fixed), ("space", self.space)):
            for name in names:
                if name not in info.defaults and not info.custom:
                    raise _FieldError(
                        f"{section}.{name}",
                        f"trainable {self.trainable!r} has no hyperparameter {name!r}; "
                        f"expected one of {sorted(info.defaults)}",
                    )
        both = sorted(set(self.fixed) & set(self.space))
        if both:
            raise _FieldError(f"fixed.{both[0]}", "is both fixed and searched")
        for name, allowed in info.choices.items():
            values = [self.fixed[name]] if name in self.fixed else []
            if name in self.space:
                param = self.space[name]
                values += (param.choice or []) + (param.grid or [])
            bad = [v for v in values if v not in allowed]
            if bad:
                where = "fixed" if name in self.fixed else "space"
                raise _FieldError(f"{where}.{name}", f"{bad[0]!r} is not one of {list(allowed)}")
        rank = DATASETS[self.dataset.name].input_rank
        if info.input_ranks is not None and rank not in info.input_ranks:
            takes = " or ".join(RANK_NAMES[r] for r in info.input_ranks)
            raise _FieldError(
                "dataset.name",
                f"{self.dataset.name} gives {RANK_NAMES[rank]}; trainable {self.trainable!r} "
                f"takes {takes}",
            )
        conflict = data_conflict(self.trainable, self.dataset.name, self._values())
        if conflict:
            where, _, what = conflict.partition(": ")
            section = (
                "dataset"
                if where == "dataset.name"
                else ("space" if where in self.space else "fixed")  # a default: fix it
            )
            raise _FieldError(where if section == "dataset" else f"{section}.{where}", what)
        if self.metric.name not in info.metrics:
            raise _FieldError(
                "metric.name",
                f"trainable {self.trainable!r} does not report {self.metric.name!r}; "
                f"expected one of {list(info.metrics)}",
            )
        return self

    @model_validator(mode="after")
    def _conditions_valid(self) -> Study:
        """Each `when:` names another searched choice parameter and some of its choices,
        and conditions form no cycle (a compared study's variants are checked each)."""
        if self.compare:
            return self
        choices = [n for n, p in self.space.items() if p.choice is not None]
        for name, param in self.space.items():
            for parent, values in (param.when or {}).items():
                where = f"space.{name}.when.{parent}"
                other = self.space.get(parent)
                if parent == name or other is None or other.choice is None:
                    expected = [n for n in choices if n != name]
                    raise _FieldError(
                        where, f"not a searched choice parameter; expected one of {expected}"
                    )
                bad = [v for v in values if v not in other.choice]
                if bad:
                    raise _FieldError(
                        where, f"{bad[0]!r} is not one of its choices {list(other.choice)}"
                    )
        cycle = _condition_cycle(self.space)
        if cycle:
            raise _FieldError(
                f"space.{cycle[0]}.when.{cycle[1]}",
                f"conditions form a cycle ({' → '.join(cycle)})",
            )
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], trainable: Any = None) -> Study:
        """A study from plain data (the Python API); `trainable`: your Ray Tune function
        `train(config)`, passed as the callable (then the data need not name it), which
        `hpo.run` then runs."""
        study = parse_study(_named(data, trainable), "study", function=trainable)
        study._function = trainable
        return study

    @classmethod
    def from_yaml(cls, path: str | Path, trainable: Any = None) -> Study:
        """A study file, as `hpo run` reads it; `trainable` as in `from_dict`."""
        if trainable is None:
            return load_study(path)
        study = parse_study(_named(_read_yaml(Path(path)), trainable), str(path), trainable)
        study._function = trainable
        return study

    @property
    def trainable_function(self) -> Any:
        """The callable the Python API was given for `trainable` (None: the name is
        imported where trials run)."""
        return self._function

    def _values(self) -> dict[str, Any]:
        """Each hyperparameter's fixed value, or the values its search may give."""
        values: dict[str, Any] = dict(self.fixed)
        for name, param in self.space.items():
            values[name] = (param.choice or []) + (param.grid or [])
        return values

    @model_validator(mode="before")
    @classmethod
    def _default_strategies(cls, data: Any) -> Any:
        """No `strategies`: every registered strategy that the study can run (bohb needs
        rungs, pbt a continuous hyperparameter); naming one that cannot is an error."""
        if not isinstance(data, dict) or "strategies" in data:
            return data
        names = list(STRATEGIES)
        budget = data.get("budget")
        if isinstance(budget, dict) and budget.get("min_epochs", 1) >= budget.get("max_epochs", 2):
            names.remove("bohb")
        space = data.get("space")
        if isinstance(space, dict) and not any(
            isinstance(p, dict) and ("uniform" in p or "loguniform" in p) and not p.get("when")
            for p in space.values()
        ):
            names.remove("pbt")
        return {**data, "strategies": names}

    @model_validator(mode="after")
    def _strategies_fit(self) -> Study:
        for name, options in self.strategy_options.items():
            _check_options(name, options, self.strategies)
        if self.compare:
            return self  # each combination of levels is checked as a study of its own
        if "pbt" in self.strategies and not _continuous(self.space):
            raise _FieldError(
                "strategies",
                "pbt perturbs continuous hyperparameters, and the space has none "
                "(expected a uniform or loguniform entry in space without `when`)",
            )
        if "bohb" in self.strategies and self.budget.min_epochs >= self.budget.max_epochs:
            raise _FieldError(
                "budget.min_epochs",
                "bohb stops trials at rungs from min_epochs to max_epochs; "
                "expected min_epochs < max_epochs",
            )
        return self


Combination = dict[str, Level]  # factor → the level it takes
# Columns the results of a compared study already have beside one per factor.
RESERVED_FACTORS = ("variant", "strategy", "seed", "trial_id", "epoch", "status")


def combinations(study: Study) -> list[Combination]:
    """Every combination of the compared factors' levels, in the study's order (the first
    factor varies slowest); one empty combination for a study that compares nothing."""
    import itertools

    factors = list(study.compare)
    return [
        dict(zip(factors, chosen, strict=True))
        for chosen in itertools.product(*(study.compare[f] for f in factors))
    ]


def variant_label(combination: Combination) -> str:
    return ", ".join(f"{factor}={level.name}" for factor, level in combination.items())


def variant_study(study: Study, combination: Combination, context: Any = None) -> Study:
    """The study one combination of levels runs: a factor that is a hyperparameter of the
    trainable is fixed to its level's value; each level's `fixed` and `space` are added
    (a level's fixed value replaces a searched one and the other way round)."""
    defaults = trainable_info(study.trainable, trusted=True)
    fixed, space = dict(study.fixed), dict(study.space)
    for factor, level in combination.items():
        added = dict(level.fixed)
        if (factor in defaults.defaults or defaults.custom) and factor not in added:
            added[factor] = level.value
        for name in added:
            space.pop(name, None)
        for name in level.space:
            fixed.pop(name, None)
        fixed.update(added)
        space.update(level.space)
    data = {**study.model_dump(mode="python"), "fixed": fixed, "space": space, "compare": {}}
    return Study.model_validate(data, context=context)


def _trusted(info: ValidationInfo) -> bool:
    """Validation that runs nothing: of saved results (`trusted`), or without a context,
    i.e. pydantic re-validating a Study already validated (e.g. inside a StudyRecord).
    Every entry point that reads a study to run it passes a context (parse_study)."""
    return info.context is None or bool(info.context.get("trusted"))


def function_problem(reference: str, function: Any = None) -> str | None:
    """Why `reference` (or the callable the Python API was given for it) cannot run as a
    Ray Tune function trainable, or None; imports the user's module (opted in)."""
    import importlib

    from trainables.user_function import signature_problem

    if function is None:
        module_name, _, attr = reference.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), attr)
        except ImportError as error:
            return (
                f"cannot import {module_name} ({type(error).__name__}: {error}); run hpo in "
                "the folder that holds it, or install it"
            )
        except AttributeError:
            return f"module {module_name} has no {attr!r}"
    problem = signature_problem(function)
    return f"{reference} {problem}" if problem else None


def _levels(levels: Any) -> Any:
    if isinstance(levels, dict):
        return [{"value": name, **(spec or {})} for name, spec in levels.items()]
    if isinstance(levels, list):
        return [lv if isinstance(lv, dict) and "value" in lv else {"value": lv} for lv in levels]
    return levels


def _continuous(space: dict[str, Param]) -> bool:
    """Whether PBT has something to perturb: a uniform or loguniform parameter that every
    trial has (quantized, integer and conditional ones are never perturbed)."""
    return any(
        (p.uniform is not None or p.loguniform is not None) and not p.when for p in space.values()
    )


def _condition_cycle(space: dict[str, Param]) -> list[str]:
    """A cycle of `when:` parents as names [a, b, ..., a], or [] if there is none."""
    state: dict[str, str] = {}  # name → "open" while on the path, "done" after

    def visit(name: str, path: list[str]) -> list[str]:
        if state.get(name) == "open":
            return [*path[path.index(name) :], name]
        if state.get(name) == "done" or name not in space:
            return []
        state[name] = "open"
        for parent in space[name].when or {}:
            cycle = visit(parent, [*path, name])
            if cycle:
                return cycle
        state[name] = "done"
        return []

    for name in space:
        cycle = visit(name, [])
        if cycle:
            return cycle
    return []


def _check_options(name: str, options: Any, strategies: list[str]) -> None:
    where = f"strategy_options.{name}"
    if name not in STRATEGIES:
        raise _FieldError(where, f"unknown strategy; expected some of {list(STRATEGIES)}")
    if name not in strategies:
        raise _FieldError(where, f"{name!r} is not in this study's strategies {strategies}")
    model = STRATEGIES[name].options
    if model is None:
        raise _FieldError(where, f"strategy {name!r} takes no options")
    if not isinstance(options, dict):
        raise _FieldError(where, "expected a mapping of option names to values")
    try:
        model(**options)
    except ValidationError as error:
        first = error.errors()[0]
        option = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            known = sorted(model.model_fields)
            message = f"unknown option of {name!r}; expected some of {known}"
        else:
            message = first["msg"].removeprefix("Value error, ")
        raise _FieldError(f"{where}.{option}", message) from None


class _FieldError(ValueError):
    """A cross-field error that knows which field it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _format(error: ValidationError) -> str:
    first = error.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError):
        return f"{cause.field}: {cause.message}"
    field = ".".join(str(part) for part in first["loc"]) or "study"
    if first["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    if first["type"] == "missing":
        return f"{field}: required field is missing"
    message = first["msg"].removeprefix("Value error, ")
    return f"{field}: {message}"


def parse_study(
    data: Any, source: str = "study", trusted: bool = False, function: Any = None
) -> Study:
    """Validate study fields; `trusted` (a study.json that already ran) accepts a custom
    trainable without --allow-custom, since reading results runs none of its code;
    `function`: the callable the Python API was given for the study's `trainable` (its
    caller's consent to run it, and what is checked instead of importing the name)."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: expected a mapping of study fields at the top level")
    try:
        return Study.model_validate(data, context={"trusted": trusted, "function": function})
    except ValidationError as error:
        raise StudyError(f"{source}: {_format(error)}") from None


def _named(data: Any, function: Any) -> Any:
    """Study data whose `trainable` names the callable the Python API was given."""
    if function is None or not isinstance(data, dict) or data.get("trainable"):
        return data
    return {**data, "trainable": f"{function.__module__}:{function.__name__}"}


def load_study(path: str | Path, trusted: bool = False) -> Study:
    """Read and validate a study file; raise StudyError with one line on any problem.
    `trusted`: only read, never run (see parse_study)."""
    path = Path(path)
    return parse_study(_read_yaml(path), str(path), trusted)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except OSError as error:
        raise StudyError(f"{path}: cannot read ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise StudyError(f"{path}: invalid YAML{where}: {problem}") from None
    return data


def without_compare(study: Study, path: str | Path, command: str) -> Study:
    """`study`, or a StudyError for a study with `compare:` (hpo run runs its variants;
    `command` takes one study's space)."""
    if study.compare:
        raise StudyError(
            f"{path}: compare: hpo {command} takes a study without compared factors "
            "(write one variant's levels into fixed/space to use it)"
        )
    return study


def study_hash(path: str | Path) -> str:
    """sha256 of the study file's bytes: provenance for results and exports."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def study_digest(study: Study) -> str:
    """sha256 of a study's resolved fields: the provenance of a study built in Python."""
    import json

    text = json.dumps(resolved(study), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def resolved(study: Study) -> dict[str, Any]:
    """The study with every default filled in, as plain data (YAML/JSON-ready)."""
    data = study.model_dump(mode="json", exclude_none=False)
    data["space"] = {
        name: {k: v for k, v in param.items() if v is not None}
        for name, param in data["space"].items()
    }
    return data


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")
