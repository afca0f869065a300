"""Per-point statistics (``explorer.stats``) against independent references.

- Fitting any observer from a point's statistics == feeding it the tensors (Gaussian, heavy-tailed,
  outlier-channel data; layer- and channel-wise).
- Percentile from the kept tails == ``numpy.quantile`` per batch, for any alpha at or above the floor.
- Metrics from the statistics vs the exact error of fake quantization on all the tensors:
  SQNR within 0.3 dB, clipped fraction within 0.02 percentage points, at 4, 6 and 8 bits.
- Merging two halves == one pass; ``state_dict`` round trip; bad states and refits below the floor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer import BitType, build_observer
from explorer.observers import observer_names
from explorer.quant_ops import quant_error
from explorer.stats import PointStats, SignedHistogram, error_from_stats
from explorer.stats.histogram import EXP_MIN, AscendingBins
from explorer.stats.layout import true_positions
from explorer.stats.quantile import row_ends, row_largest, row_quantile, row_quantile_and_extreme, row_smallest

RAW_LIMIT = 262_144


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(kind: str, g: torch.Generator, batch: int, tokens: int = 197, channels: int = 24) -> torch.Tensor:
    """Token activations ``[B, N, C]`` of a few shapes real ViTs show."""
    x = torch.randn(batch, tokens, channels, generator=g)
    if kind == "heavy":  # Student-t like: ratio of normals
        x = x / torch.randn(batch, tokens, channels, generator=g).abs().clamp_min(0.05) * 0.1
    elif kind == "outlier_channels":
        x = x * torch.where(torch.arange(channels) % 11 == 3, 40.0, 1.0)
    elif kind == "gelu":
        x = torch.nn.functional.gelu(x * 2)
    return x


KINDS = ("gaussian", "heavy", "outlier_channels", "gelu")
OBSERVER_SETTINGS = {
    "MinmaxObserver": {},
    "PercentileObserver": {"percentile_alpha": 0.9995, "percentile_sigma": 0.3},
    "OmseObserver": {},
    "KLObserver": {"kl_bins": 1024},
}


def stats_of(batches: list[torch.Tensor], alpha_floor: float = 0.999, module_type: str = "activation") -> PointStats:
    stats = PointStats(module_type, alpha_floor)
    for b in batches:
        stats.update(b)
    return stats


@pytest.mark.parametrize("mode", ["layer_wise", "channel_wise"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("observer_type", sorted(OBSERVER_SETTINGS))
def test_fit_from_stats_equals_feeding_tensors(observer_type: str, kind: str, mode: str) -> None:
    g = gen(len(kind) * 31 + len(observer_type) + len(mode))
    batches = [make(kind, g, 24) for _ in range(3)]  # 3 × 113k values: past the raw limit in all
    assert sum(b.numel() for b in batches) > RAW_LIMIT
    entry = {"observer_type": observer_type, "calibration_mode": mode, **OBSERVER_SETTINGS[observer_type]}
    fed = build_observer(entry)
    for b in batches:
        fed.update(b)
    fitted = build_observer(entry).fit(stats_of(batches))
    assert fitted.num_batches == fed.num_batches == 3
    for name in ("data_min", "data_max", "min_val", "max_val", "clip_min", "clip_max"):
        assert torch.equal(getattr(fitted, name), getattr(fed, name)), name
    for a, b in zip(fitted.get_quantization_params(), fed.get_quantization_params(), strict=True):
        assert torch.equal(a, b)


@settings(max_examples=25, deadline=None)
@given(
    alpha=st.floats(0.999, 1.0),
    sigma=st.floats(0.01, 1.0),
    batches=st.integers(1, 4),
    tokens=st.integers(1, 300),
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(["layer_wise", "channel_wise"]),
)
def test_percentile_from_tails_is_exact_for_any_alpha_above_the_floor(
    alpha: float, sigma: float, batches: int, tokens: int, seed: int, mode: str
) -> None:
    """The EMA over per-batch numpy quantiles, recomputed from the tails kept at floor 0.999."""
    g = gen(seed)
    data = [make("heavy", g, 2, tokens, 5) for _ in range(batches)]
    observer = build_observer(
        {"observer_type": "PercentileObserver", "calibration_mode": mode, "percentile_alpha": alpha,
         "percentile_sigma": sigma}
    ).fit(stats_of(data))  # fmt: skip
    lo = hi = None
    for b in data:
        rows = (b.reshape(-1, 5).T if mode == "channel_wise" else b.reshape(1, -1)).double().numpy()
        cur_lo, cur_hi = np.quantile(rows, 1 - alpha, axis=1), np.quantile(rows, alpha, axis=1)
        lo, hi = (cur_lo, cur_hi) if lo is None else (lo + sigma * (cur_lo - lo), hi + sigma * (cur_hi - hi))
    np.testing.assert_allclose(observer.clip_min.double().numpy().ravel(), lo, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(observer.clip_max.double().numpy().ravel(), hi, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("alpha_floor", [0.9, 0.99, 0.995, 0.999, 0.9999])
def test_tail_length_covers_every_quantile_at_or_beyond_the_floor(alpha_floor: float) -> None:
    """numpy's own interpolation index (``np.quantile`` of ``arange(n)`` is the index itself) never
    needs more values from an end than ``tail_length`` keeps, for quantiles from the floor (and the
    next few floats above it) to 1, on every row length up to 3000."""
    from explorer.stats.quantile import tail_length

    above = np.nextafter(alpha_floor, 1.0)
    qs = np.concatenate([[alpha_floor, above, np.nextafter(above, 1.0)], np.linspace(alpha_floor, 1.0, 50)])
    for n in range(1, 3001):
        index_top = np.quantile(np.arange(n), qs)  # float positions of the upper quantiles
        index_bottom = np.quantile(np.arange(n), 1.0 - qs)
        # from the top: positions floor(h) .. n - 1; from the bottom: 0 .. floor(h) + 1 (numpy's pair)
        needed = max(int(n - np.floor(index_top).min()), min(int(np.floor(index_bottom).max()) + 1, n - 1) + 1)
        assert needed <= tail_length(n, alpha_floor), (n, needed)


def test_refit_below_the_floor_names_the_floor() -> None:
    stats = stats_of([make("gaussian", gen(1), 4)], alpha_floor=0.9995)
    with pytest.raises(ValueError, match="alpha_floor 0.9995"):
        build_observer({"observer_type": "PercentileObserver", "percentile_alpha": 0.999}).fit(stats)
    build_observer({"observer_type": "PercentileObserver", "percentile_alpha": 0.9995}).fit(stats)


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("mode", ["layer_wise", "channel_wise"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("observer_type", ["MinmaxObserver", "PercentileObserver", "OmseObserver"])
def test_metrics_from_stats_match_exact_errors(observer_type: str, kind: str, mode: str, bits: int) -> None:
    """SQNR within 0.3 dB and clipped fraction within 0.02 points of fake quantization on all tensors."""
    g = gen(bits * 101 + len(kind) + len(mode))
    batches = [make(kind, g, 24) for _ in range(3)]
    stats = stats_of(batches)
    assert stats.raw is None  # the histogram path, not the raw values
    observer = build_observer(
        {"observer_type": observer_type, "calibration_mode": mode, "bit_type": {"bits": bits, "signed": True}}
    ).fit(stats)
    scale, zero_point = observer.get_quantization_params()
    ours = error_from_stats(stats.view(mode), scale, zero_point, observer.bit_type)
    exact = quant_error(batches, scale, zero_point, observer.bit_type)
    assert abs(ours.sqnr_db - exact.sqnr_db) <= 0.3, (ours, exact)
    assert abs(ours.clipped_fraction - exact.clipped_fraction) <= 2e-4, (ours, exact)
    assert ours.mse == pytest.approx(ours.clip_mse + ours.round_mse, rel=1e-9)


def test_clip_and_round_split_against_a_direct_computation() -> None:
    """Clipping error = error of the values beyond the end levels' rounding intervals."""
    g = gen(5)
    x = make("heavy", g, 24)
    stats = stats_of([x])
    bit_type = BitType(4, True)
    scale = torch.tensor(0.05)
    zero_point = torch.tensor(0)
    ours = error_from_stats(stats.view("layer_wise"), scale, zero_point, bit_type)
    x64 = x.double()
    x_hat = (torch.clamp(torch.round(x64 / 0.05), -8, 7)) * 0.05
    clipped = (x64 < -8.5 * 0.05) | (x64 > 7.5 * 0.05)
    err = (x64 - x_hat) ** 2
    assert ours.clip_mse == pytest.approx(float(err[clipped].sum() / x.numel()), rel=0.01)
    assert ours.round_mse == pytest.approx(float(err[~clipped].sum() / x.numel()), rel=0.03)
    assert ours.clipped_fraction == pytest.approx(float(clipped.double().mean()), abs=2e-4)


def _assert_same_state(a: PointStats, b: PointStats) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        if name == "sumsq":  # a float64 sum: equal up to the order of additions
            torch.testing.assert_close(sa[name], sb[name], rtol=1e-12, atol=0)
        else:
            assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("kind", KINDS)
def test_merging_two_halves_equals_one_pass(kind: str) -> None:
    g = gen(len(kind))
    batches = [make(kind, g, 8) * s for s in (1.0, 3.0, 0.5, 7.0)]  # the range grows and shrinks
    whole = stats_of(batches)
    merged = stats_of(batches[:2]).merge(stats_of(batches[2:]))
    _assert_same_state(whole, merged)
    for observer_type in observer_names():
        a = build_observer({"observer_type": observer_type}).fit(whole)
        b = build_observer({"observer_type": observer_type}).fit(merged)
        assert torch.equal(a.clip_max, b.clip_max) and torch.equal(a.clip_min, b.clip_min), observer_type


def test_merge_of_small_points_keeps_raw_values() -> None:
    g = gen(3)
    batches = [torch.randn(2, 10, 6, generator=g) for _ in range(3)]
    whole = stats_of(batches)
    assert whole.raw is not None
    _assert_same_state(whole, stats_of(batches[:1]).merge(stats_of(batches[1:])))


def test_merge_refuses_other_points() -> None:
    a = stats_of([torch.randn(2, 10, 6)])
    with pytest.raises(ValueError, match="different points"):
        a.merge(stats_of([torch.randn(2, 10, 7)]))
    with pytest.raises(ValueError, match="different points"):
        a.merge(stats_of([torch.randn(2, 10, 6)], alpha_floor=0.99))


def test_state_dict_round_trip_and_bad_states() -> None:
    g = gen(9)
    stats = stats_of([make("outlier_channels", g, 8), make("gaussian", g, 8)])
    state = stats.state_dict()
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    loaded = PointStats("activation")
    loaded.load_state_dict(state)
    _assert_same_state(stats, loaded)
    broken = dict(state)
    broken["channel_hist.counts"] = state["channel_hist.counts"].clone()
    broken["channel_hist.counts"][0, 1, 0] += 5
    with pytest.raises(ValueError, match="histogram totals"):
        PointStats("activation").load_state_dict(broken)
    missing = {k: v for k, v in state.items() if k != "point_extra.top"}
    with pytest.raises(ValueError, match="not a PointStats state"):
        PointStats("activation").load_state_dict(missing)


def test_update_failure_leaves_the_statistics_unchanged() -> None:
    stats = stats_of([torch.randn(2, 10, 6)])
    before = stats.state_dict()
    bad = torch.randn(2, 10, 6)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        stats.update(bad)
    with pytest.raises(ValueError, match="channels"):
        stats.update(torch.randn(2, 10, 5))
    after = stats.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_histogram_coarsening_is_exact_and_order_free() -> None:
    """Counting on a fine grid then coarsening == counting on the coarse grid directly."""
    g = gen(11)
    x = torch.randn(3, 5000, generator=g) * torch.tensor([[1.0], [1e-3], [300.0]])
    lo, hi = x.amin(1), x.amax(1)
    fine = SignedHistogram.empty(3, 1024).counted(x, lo, hi)
    big = fine.with_exponent(fine.exponent + 3)
    direct = SignedHistogram(torch.zeros_like(fine.counts), fine.exponent + 3, torch.zeros_like(fine.zeros)).counted(
        x, lo, hi
    )
    assert torch.equal(big.counts, direct.counts) and torch.equal(big.zeros, direct.zeros)
    assert bool((fine.total() == 5000).all())
    # magnitudes: both sides on one grid, zeros in bin 0
    counts, _ = fine.magnitude()
    assert counts.sum(dim=1).tolist() == [5000, 5000, 5000]


@pytest.mark.parametrize("right", [False, True])
def test_ascending_bins_search_by_arithmetic_equals_a_binary_search(right: bool) -> None:
    """On a histogram's own grids (sides of different widths, one at the smallest exponent) the
    arithmetic lookup gives numpy's ``searchsorted`` for queries on every edge, between edges,
    beyond both ends, at ±0 and at ±inf."""
    half = 64
    exponent = torch.tensor([[-3, 2], [5, 5], [EXP_MIN, -1], [-126 + 40, -126]])
    hist = SignedHistogram(torch.ones(4, 2, half, dtype=torch.int64), exponent, torch.zeros(4, dtype=torch.int64))
    bins = hist.ascending_bins()
    edges = bins.edges.numpy()
    g = gen(17)
    between = (torch.rand(4, 200, generator=g, dtype=torch.float64) * 2.4 - 1.2) * bins.edges[:, -1:]
    ends = torch.tensor([0.0, -0.0, float("inf"), -float("inf")], dtype=torch.float64).expand(4, -1)
    queries = torch.cat([bins.edges, between, ends, bins.edges * 1.5], dim=1)
    expected = np.stack(
        [np.searchsorted(edges[r], queries[r].numpy(), side="right" if right else "left") for r in range(4)]
    )
    np.testing.assert_array_equal(bins.searchsorted(queries, right=right).numpy(), expected)
    plain = AscendingBins(bins.counts, bins.edges)  # no grid: the binary search itself
    np.testing.assert_array_equal(plain.searchsorted(queries, right=right).numpy(), expected)


def numpy_signed_counts(rows: np.ndarray, exponent: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per row, negative and positive values binned by ``floor(|x| / w)`` per side (a
    negative value on an edge goes one bin down, as ``floor(x / w)`` does), exact zeros apart."""
    counts = np.zeros((rows.shape[0], 2, half), dtype=np.int64)
    for r, row in enumerate(rows.astype(np.float64)):
        for side, values in ((0, row[row < 0]), (1, row[row > 0])):
            index = np.floor(values / 2.0 ** exponent[r, side]).astype(np.int64)
            index = -index - 1 if side == 0 else index
            counts[r, side] = np.bincount(index, minlength=half)
    return counts, (rows == 0).sum(axis=1)


@pytest.mark.parametrize("layout", ["rows", "transposed", "blocks"])
def test_binned_counts_match_numpy_on_edges_zeros_and_lopsided_rows(layout: str) -> None:
    """Bin edges, exact (and negative) zeros, rows whose sides have different grids (even beyond
    float32 range when one side's factor meets the other side's values), in every memory layout."""
    g = gen(5)
    x = torch.randn(6, 400, generator=g)
    x[1] = torch.nn.functional.gelu(x[1] * 3)  # tiny negatives, large positives
    x[2] = -x[2].abs() * 1e30
    x[2, :3] = 1e-30  # positive side far finer than the negative side
    x[3, ::7] = 0.0
    x[3, 1::7] = -0.0
    x[4] = torch.round(x[4] * 8) / 8  # values on bin edges
    x[5] = 0.0
    lo, hi = x.amin(1), x.amax(1)
    hist = SignedHistogram.empty(6, 64).grown_for(lo, hi)
    data = {"rows": x, "transposed": x.t().contiguous().t(), "blocks": x.t().contiguous().view(400, 6, 1)}[layout]
    counts, zeros = hist.binned(data, lo, hi)
    expected, expected_zeros = numpy_signed_counts(x.numpy(), hist.exponent.numpy(), 64)
    assert np.array_equal(counts.numpy(), expected) and np.array_equal(zeros.numpy(), expected_zeros)
    with pytest.raises(ValueError, match="outside the histogram's grids"):
        SignedHistogram.empty(6, 64).binned(x, lo, hi)  # grids not grown for the data


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3000),
    k=st.one_of(st.integers(1, 3), st.integers(1, 40)),  # 1-2: picked by max/min passes, not topk
    rows=st.integers(1, 5),
    transposed=st.booleans(),
    ties=st.booleans(),
    seed=st.integers(0, 99),
)
def test_row_selections_equal_numpy(n: int, k: int, rows: int, transposed: bool, ties: bool, seed: int) -> None:
    """row_largest / row_smallest / row_ends / row_quantile (partial selections, narrowed by group peaks on long rows,
    on contiguous rows or a channels-last tensor seen as rows) == numpy's sort and quantile; the input
    is left as it was."""
    k = min(k, n)
    g = gen(seed)
    x = torch.randn(n, rows, generator=g) if transposed else torch.randn(rows, n, generator=g)
    if ties:
        x = torch.round(x * 2) / 2
    data = x.t() if transposed else x
    before = data.clone()
    ordered = np.sort(data.numpy(), axis=1)
    top, bottom = row_ends(data, k)
    assert np.array_equal(top.numpy(), ordered[:, ::-1][:, :k]) and np.array_equal(bottom.numpy(), ordered[:, :k])
    assert np.array_equal(row_largest(data, k).numpy(), ordered[:, ::-1][:, :k])
    assert np.array_equal(row_smallest(data, k).numpy(), ordered[:, :k])
    for q in (0.999, 0.9995, 0.0005, 0.99):
        want = np.quantile(data.numpy().astype(np.float64), q, axis=1)
        assert np.allclose(row_quantile(data, q).numpy(), want, rtol=1e-12, atol=1e-15)  # to float64 rounding
        for largest, extreme in ((True, ordered[:, -1]), (False, ordered[:, 0])):  # from the selection or not
            got, end = row_quantile_and_extreme(data, q, largest)
            assert np.allclose(got.numpy(), want, rtol=1e-12, atol=1e-15) and np.array_equal(end.numpy(), extreme)
    assert torch.equal(data, before)


@settings(max_examples=60, deadline=None)
@given(length=st.integers(0, 200), density=st.sampled_from([0.0, 0.01, 0.2, 1.0]), offset=st.integers(0, 9))
def test_true_positions_equal_nonzero(length: int, density: float, offset: int) -> None:
    """The word-wise search finds exactly nonzero's positions, for any length (a tail shorter than a
    word), any density, and a mask that starts off an 8-byte boundary (then it falls back)."""
    g = gen(length * 10 + offset)
    mask = torch.rand(length + offset, generator=g) < density
    mask = mask[offset:]
    assert torch.equal(true_positions(mask), mask.nonzero().squeeze(1))
    assert torch.equal(true_positions(mask.view(1, -1, 1)), mask.nonzero().squeeze(1))


@pytest.mark.parametrize("alpha_floor", [0.95, 0.999])  # ends found by top-k / by histogram thresholds
def test_batch_ends_equal_a_full_sort_on_ties_zeros_and_dead_channels(alpha_floor: float) -> None:
    """The kept per-batch ends == the sorted ends, per channel and over the whole point, on data
    full of ties, zeros and constant channels."""
    g = gen(9)
    x = torch.relu(torch.randn(4, 50, 6, generator=g))
    x[..., 1] = 0.0  # a dead channel
    x[..., 2] = torch.round(x[..., 2] * 2) / 2  # ties
    x[..., 3] = -2.5  # a constant channel
    x[..., 4] = -x[..., 4]
    stats = stats_of([x], alpha_floor=alpha_floor)
    rows = x.reshape(-1, 6).t()
    k = stats.channel_ends.top[0].shape[1]
    ordered = torch.sort(rows, dim=1).values
    assert torch.equal(stats.channel_ends.top[0], ordered[:, -k:].flip(1))
    assert torch.equal(stats.channel_ends.bottom[0], ordered[:, :k])
    flat = torch.sort(x.reshape(-1)).values
    ends = stats.view("layer_wise").ends  # rebuilt from the channels' ends and the values beyond them
    kp = ends.top[0].shape[1]
    assert torch.equal(ends.top[0][0], flat[-kp:].flip(0))
    assert torch.equal(ends.bottom[0][0], flat[:kp])


def test_subnormal_and_huge_magnitudes_are_counted() -> None:
    x = torch.tensor([[0.0, 1e-40, -1e-39, 1e-38, 3e38, -3e38, 1.0]])
    hist = SignedHistogram.empty(1, 256).counted(x, x.amin(1), x.amax(1))
    assert int(hist.total()) == 7 and int(hist.zeros) == 1
    # On a grid of width 2**120, -1e-39 / w underflows to -0: it still counts in the negative side's bin 0.
    assert int(hist.counts[0, 0, 0]) == 1 and int(hist.counts[0, 1, 0]) == 3
    for observer_type in ("OmseObserver", "KLObserver"):
        obs = build_observer({"observer_type": observer_type, "calibration_mode": "layer_wise"})
        obs.update(torch.tensor([[0.0, 1e-38, 0.0, 2e-38]]))
        scale, _ = obs.get_quantization_params()
        assert torch.isfinite(scale).all()


def test_metrics_stay_finite_on_subnormal_and_lopsided_data() -> None:
    """Tiny negative values beside large positive ones: one side's bins have subnormal widths."""
    x = torch.cat([torch.full((1, 100), -1e-39), torch.rand(1, 1000, generator=gen(2))], dim=1).reshape(1, 11, 100)
    stats = stats_of([x])
    stats.raw = None  # force the histogram path
    for observer_type in observer_names():
        obs = build_observer({"observer_type": observer_type, "calibration_mode": "layer_wise"}).fit(stats)
        scale, zero_point = obs.get_quantization_params()
        err = error_from_stats(stats.view("layer_wise"), scale, zero_point, obs.bit_type)
        exact = quant_error([x], scale, zero_point, obs.bit_type)
        assert np.isfinite(err.mse) and abs(err.sqnr_db - exact.sqnr_db) < 0.3, (observer_type, err, exact)
