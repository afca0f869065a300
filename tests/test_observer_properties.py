"""Property-based checks (hypothesis) that hold for every observer, bit width and layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer import BitType, KLObserver, MinmaxObserver, OmseObserver, PercentileObserver

OBSERVERS = (MinmaxObserver, PercentileObserver, OmseObserver, KLObserver)
RANKS = {"activation": (2, 3, 4), "linear_weight": (2,), "conv_weight": (3, 4, 5)}
EPS32 = float(torch.finfo(torch.float32).eps)
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def channel_axis(module_type: str, ndim: int) -> int:
    """SPEC §2, restated: weights → dim 0; activations → last dim up to 3-D, dim 1 for 4-D."""
    if module_type != "activation":
        return 0
    return 1 if ndim == 4 else ndim - 1


@dataclass
class Case:
    cls: type
    bit_type: BitType
    module_type: str
    calibration_mode: str
    kwargs: dict
    batches: list

    def build(self, calibration_mode: str | None = None):
        return self.cls(self.bit_type, self.module_type, calibration_mode or self.calibration_mode, **self.kwargs)

    def __repr__(self) -> str:
        shapes = [tuple(b.shape) for b in self.batches]
        return (
            f"Case({self.cls.__name__}, {self.bit_type.name}, {self.module_type}, {self.calibration_mode}, "
            f"{self.kwargs}, shapes={shapes})"
        )


def make_data(rng: np.random.Generator, kind: str, shape: tuple[int, ...], scale: float, offset: float) -> np.ndarray:
    if kind == "normal":
        x = rng.normal(offset, 1.0, shape)
    elif kind == "uniform":
        x = rng.uniform(-1.0, 1.0, shape) + offset
    elif kind == "laplace":
        x = rng.laplace(offset, 1.0, shape)
    elif kind == "relu":
        x = np.maximum(rng.normal(offset, 1.0, shape), 0.0)
    elif kind == "outlier":
        x = rng.normal(0.0, 1.0, shape)
        x.reshape(-1)[rng.integers(0, x.size)] = 50.0
    elif kind == "constant":
        x = np.full(shape, offset)
    else:  # sparse: mostly exact zeros
        x = rng.normal(0.0, 1.0, shape) * (rng.random(shape) < 0.1)
    return (x * scale).astype(np.float32)


@st.composite
def cases(draw, observers=OBSERVERS, modes=("layer_wise", "channel_wise")) -> Case:
    cls = draw(st.sampled_from(observers))
    bit_type = BitType(draw(st.integers(2, 8)), draw(st.booleans()))
    module_type = draw(st.sampled_from(sorted(RANKS)))
    ndim = draw(st.sampled_from(RANKS[module_type]))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    calibration_mode = draw(st.sampled_from(modes))
    kwargs: dict = {}
    if cls is KLObserver:
        kwargs["symmetric"] = draw(st.sampled_from([None, True]))
        kwargs["kl_bins"] = max(bit_type.levels, draw(st.sampled_from([128, 256, 512])))
    else:
        kwargs["symmetric"] = draw(st.sampled_from([None, True, False]))
    if cls is PercentileObserver:
        kwargs["percentile_alpha"] = draw(st.sampled_from([0.51, 0.9, 0.99, 0.9995, 0.99999, 1.0]))
        kwargs["percentile_sigma"] = draw(st.sampled_from([0.01, 0.1, 0.5, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "uniform", "laplace", "relu", "outlier", "constant", "sparse"]))
    scale = 10.0 ** draw(st.floats(-3.0, 3.0))
    offset = draw(st.sampled_from([0.0, 0.5, -2.0]))
    batches = []
    for i in range(draw(st.integers(1, 3))):
        x = make_data(rng, kind, shape, scale * (1.0 + i * draw(st.floats(0.0, 1.0))), offset)
        if cls is KLObserver and not bit_type.signed:
            x = np.abs(x)  # KL on an unsigned type takes non-negative data only
        batches.append(torch.from_numpy(x))
    return Case(cls, bit_type, module_type, calibration_mode, kwargs, batches)


@SETTINGS
@given(case=cases())
def test_params_are_valid_and_quantize_within_half_a_step(case: Case) -> None:
    obs = case.build()
    for batch in case.batches:
        obs.update(batch)
    scale, zero_point = obs.get_quantization_params()
    lb, ub = case.bit_type.lower_bound, case.bit_type.upper_bound
    ndim = case.batches[0].dim()

    # scale > 0 and finite; zero point an in-range integer; 0 when symmetric
    assert torch.isfinite(scale).all()
    assert (scale >= EPS32).all()
    assert not zero_point.is_floating_point()
    assert ((zero_point >= lb) & (zero_point <= ub)).all()
    if obs.symmetric:
        assert (zero_point == 0).all()

    # shapes broadcast against the input
    if case.calibration_mode == "layer_wise":
        assert scale.shape == () and zero_point.shape == ()
    else:
        expected = [1] * ndim
        axis = channel_axis(case.module_type, ndim)
        expected[axis] = case.batches[0].shape[axis]
        assert list(scale.shape) == expected and list(zero_point.shape) == expected

    # clip range is ordered and sits inside what was observed
    lo, hi = obs.clip_min.double(), obs.clip_max.double()
    mn, mx = obs.min_val.double(), obs.max_val.double()
    assert (lo <= hi).all()
    if case.cls is KLObserver:
        reach = torch.maximum(mn.abs(), mx.abs())
        assert (hi <= reach + obs.bin_width * 1.0001 + 1e-12).all()
        assert torch.equal(lo, -hi) if case.bit_type.signed else (lo == 0).all()
    else:
        # (OMSE shrinks both ends toward 0, so compare the ranges widened to include 0)
        tol = 1e-6 * torch.maximum(mn.abs(), mx.abs()) + 1e-30
        assert (lo.clamp(max=0) >= mn.clamp(max=0) - tol).all()
        assert (hi.clamp(min=0) <= mx.clamp(min=0) + tol).all()
    if case.cls is MinmaxObserver:
        assert torch.equal(lo.float(), mn.float()) and torch.equal(hi.float(), mx.float())

    for batch in case.batches:
        for x in (batch, batch * 100.0):
            q = torch.clamp(torch.round(x / scale) + zero_point, lb, ub)
            assert torch.isfinite(q).all()
            assert ((q >= lb) & (q <= ub)).all()
        q = torch.clamp(torch.round(batch / scale) + zero_point, lb, ub)
        x_hat = (q - zero_point) * scale
        r_lo, r_hi = (lb - zero_point) * scale, (ub - zero_point) * scale
        inside = (batch >= r_lo) & (batch <= r_hi)
        err = (x_hat - batch).abs()
        bound = (scale / 2 * (1 + 1e-5)).expand_as(batch) + 1e-6 * batch.abs()
        assert (err[inside] <= bound[inside]).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(observers=(MinmaxObserver, PercentileObserver, KLObserver), modes=("channel_wise",)))
def test_channel_wise_equals_layer_wise_on_each_channel(case: Case) -> None:
    obs = case.build()
    for batch in case.batches:
        obs.update(batch)
    ndim = case.batches[0].dim()
    axis = channel_axis(case.module_type, ndim)
    channels = case.batches[0].shape[axis]
    lo, hi = obs.clip_min.reshape(-1), obs.clip_max.reshape(-1)
    scale, zero_point = (p.reshape(-1) for p in obs.get_quantization_params())
    assert lo.numel() == channels
    for c in range(channels):
        single = case.build("layer_wise")
        for batch in case.batches:
            single.update(batch.narrow(axis, c, 1))
        assert float(single.clip_min) == pytest.approx(float(lo[c]), rel=1e-6, abs=1e-30)
        assert float(single.clip_max) == pytest.approx(float(hi[c]), rel=1e-6, abs=1e-30)
        s, z = single.get_quantization_params()
        assert float(s) == pytest.approx(float(scale[c]), rel=1e-6)
        assert int(z) == int(zero_point[c])
