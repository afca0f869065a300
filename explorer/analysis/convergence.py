"""How many calibration batches an observer needs: its clip range after each batch seen.

Computed from the per-batch statistics the run keeps (no model pass): MinMax is the running
extreme of each batch's own extremes (the first of its kept ends), Percentile the EMA over the
per-batch quantiles, exactly as the observer folds them. OMSE and KL search a histogram of all
the data seen; the run keeps only the histogram of all batches, not one per prefix, so their
curves cannot be drawn without calibrating again, and they are left out.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from explorer.analysis.explore import ExplorerRun
from explorer.vit import PointKey

CONVERGENCE_OBSERVERS: tuple[str, ...] = ("MinmaxObserver", "PercentileObserver")
"""Observers whose clip range per prefix of batches follows from the per-batch statistics."""


def _minmax_prefix(top: list[Tensor], bottom: list[Tensor]) -> tuple[Tensor, Tensor]:
    """``[batches, rows]`` running minimum and maximum."""
    highs = torch.stack([t[:, 0] for t in top]).double()
    lows = torch.stack([b[:, 0] for b in bottom]).double()
    return torch.cummin(lows, dim=0).values, torch.cummax(highs, dim=0).values


def _ema_prefix(values: Tensor, sigma: float) -> Tensor:
    """``[batches, rows]``: the EMA after each batch (the first batch initialises it)."""
    out = values.clone()
    for i in range(1, values.shape[0]):
        out[i] = out[i - 1] + sigma * (values[i] - out[i - 1])
    return out


def convergence(run: ExplorerRun, key: PointKey) -> pd.DataFrame:
    """Per observer of :data:`CONVERGENCE_OBSERVERS` and per number of batches seen: the clip range
    (widest over channels) with the run config's settings for ``key``. A Percentile alpha below the
    run's floor is a ValueError, as when fitting it."""
    stats = run.stats(key)
    rows = []
    for observer_type in CONVERGENCE_OBSERVERS:
        point = run.point_config(observer_type, key)
        view = stats.view(point.calibration_mode)
        if observer_type == "MinmaxObserver":
            low, high = _minmax_prefix(view.ends.top, view.ends.bottom)
        else:
            alpha = point.percentile_alpha
            if alpha < view.alpha_floor:
                raise ValueError(
                    f"percentile_alpha {alpha} is below the run's alpha_floor {view.alpha_floor}: "
                    "its per-batch tails were not kept"
                )
            sigma = point.percentile_sigma
            low = _ema_prefix(view.ends.quantiles(1.0 - alpha), sigma)
            high = _ema_prefix(view.ends.quantiles(alpha), sigma)
        for seen, (lo, hi) in enumerate(zip(low.amin(dim=1), high.amax(dim=1), strict=True), start=1):
            rows.append({"observer_type": observer_type, "batches": seen, "clip_min": float(lo), "clip_max": float(hi)})
    return pd.DataFrame(rows)
