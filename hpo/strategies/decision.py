"""Decision time: seconds the driver spends inside a strategy's searcher and scheduler.

`timed(obj, key)` swaps the object's class for a subclass whose decision methods add
their time to `seconds(key)`; Tune holds the same objects while the run is live. Calls a
timed method makes to another one of the same object count once. A timed object pickles
as the plain original (Tune saves searchers and schedulers into its experiment state), so
what `Tuner.restore` reads back is exactly what it would read without timing, and a
restored run is not timed (its decision time is unknown, not zero).
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

# Tune's calls into searchers (suggest, next_trial, on_trial_*) and schedulers
# (on_trial_*, choose_trial_to_run).
DECISION_METHODS = (
    "suggest",
    "next_trial",
    "on_trial_add",
    "on_trial_result",
    "on_trial_complete",
    "on_trial_error",
    "on_trial_remove",
    "choose_trial_to_run",
)

_SECONDS: dict[str, float] = {}  # by run key, in this (the driver's) process


def seconds(key: str) -> float:
    return _SECONDS.get(key, 0.0)


def reset(key: str) -> None:
    _SECONDS[key] = 0.0


def timed(obj: Any, key: str) -> Any:
    """Count `obj`'s decision calls under `key`; returns `obj` (None stays None)."""
    if obj is None:
        return None
    base = getattr(type(obj), "_untimed_class", type(obj))
    obj.__class__ = _timed_class(base)
    obj._decision_key = key
    obj._decision_depth = 0
    return obj


def _timing(name: str):
    def method(self, *args: Any, **kwargs: Any) -> Any:
        outer = self._decision_depth == 0
        began = time.perf_counter()
        self._decision_depth += 1
        try:
            return getattr(super(type(self), self), name)(*args, **kwargs)
        finally:
            self._decision_depth -= 1
            if outer:
                key = self._decision_key
                _SECONDS[key] = _SECONDS.get(key, 0.0) + time.perf_counter() - began

    method.__name__ = name
    return method


_TIMING_STATE = ("_decision_key", "_decision_depth")


def _rebuild(base: type, state: dict[str, Any]) -> Any:
    obj = base.__new__(base)
    obj.__dict__.update(state)
    return obj


def _reduce(self: Any, protocol: int) -> tuple:
    state = {k: v for k, v in self.__dict__.items() if k not in _TIMING_STATE}
    return _rebuild, (self._untimed_class, state)


@cache
def _timed_class(base: type) -> type:
    methods = {name: _timing(name) for name in DECISION_METHODS if hasattr(base, name)}
    return type(
        f"Timed{base.__name__}",
        (base,),
        {**methods, "_untimed_class": base, "__reduce_ex__": _reduce},
    )
