"""Combining ranks in process: K shards of the global batches, combined, equal one pass over them
all (tails and raw values in global batch order; only float64 sums of squares may round apart)."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.analysis import run_calibration
from explorer.analysis.distributed import Ranks, combine, shard
from explorer.config import load_config


@pytest.mark.parametrize("world", [2, 3])
def test_combined_shards_equal_one_pass(demo_model: VisionTransformer, calib: list[Tensor], world: int) -> None:
    batches = [b[i : i + 4] for b in calib for i in (0, 4)][:4]  # 4 distinct batches: uneven shares for 3 ranks
    config = load_config("configs/recommended_config.yaml")
    one = run_calibration(demo_model, batches, config).capture
    shards = [run_calibration(demo_model, shard(batches, Ranks(r, world)), config).capture for r in range(world)]
    merged = combine(shards)
    assert merged.batches == one.batches and merged.stats.keys() == one.stats.keys()
    for key, stats in one.stats.items():
        a, b = stats.state_dict(), merged.stats[key].state_dict()
        assert a.keys() == b.keys(), key
        for name in a:
            if name == "sumsq":
                torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=0)
            else:
                assert torch.equal(a[name], b[name]), (key, name)


def test_a_point_refused_on_one_rank_is_refused(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    config = load_config("configs/recommended_config.yaml")
    shards = [run_calibration(demo_model, [calib[r][:4]], config).capture for r in range(2)]
    del shards[1].stats[(2, "intSoft")]
    shards[1].errors[(2, "intSoft")] = "ValueError: refused"
    merged = combine(shards)
    assert (2, "intSoft") not in merged.stats and merged.errors == {(2, "intSoft"): "ValueError: refused"}
