"""Ray Tune's quantized float domains with values that read as the grid: Ray rounds a
sample to a multiple of q as round(v / q) * q, which gives 0.30000000000000004 for 0.3
and may land a hair above the upper bound; here each value is the short float it stands
for, within [low, high]. Imported only by `hpo.space.tune_domain` (it imports Ray)."""

from __future__ import annotations

from typing import Any

from ray.tune.search.sample import Float, Quantized


class OnGrid(Quantized):
    """Ray's Quantized sampler, each value snapped by `hpo.space.quantize`."""

    def sample(self, domain: Any, config: Any = None, size: int = 1, random_state: Any = None):
        from hpo.space import quantize

        values = super().sample(domain, config, size, random_state=random_state)

        def snap(value: float) -> float:
            return quantize(value, self.q, domain.lower, domain.upper)

        return [snap(v) for v in values] if isinstance(values, list) else snap(values)


def on_grid_domain(low: float, high: float, q: float, log: bool) -> Float:
    """`tune.quniform` (or `tune.qloguniform` for `log`) with OnGrid's values."""
    domain = Float(low, high)
    domain = domain.loguniform() if log else domain.uniform()
    domain = domain.quantized(q)  # Ray's own checks: low and high multiples of q
    domain.set_sampler(OnGrid(domain.get_sampler().get_sampler(), q), allow_override=True)
    return domain
