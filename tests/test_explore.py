"""The analysis results the UI and the report read: the long-format error table, its matrices and
win counts, and failures as typed values rather than text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.analysis import (
    ERROR_COLUMNS,
    ExplorerRun,
    FitFailure,
    ObserverSummary,
    error_table,
    metric_matrix,
    observer_results,
    point_summary,
    run_calibration,
    wins,
)
from explorer.config import load_config, module_type_of
from explorer.observers import observer_label, observer_names

REFUSED = (0, "mlp_act")


@pytest.fixture(scope="module")
def run(one_block: VisionTransformer, calib: list[Tensor]) -> ExplorerRun:
    """One demo block calibrated on a few images, with one point marked as refused."""
    result = run_calibration(one_block, [b[:8] for b in calib], load_config("configs/recommended_config.yaml"))
    del result.capture.stats[REFUSED]
    result.capture.errors[REFUSED] = "ValueError: refused for the test"
    return result


@pytest.fixture(scope="module")
def table(run: ExplorerRun) -> pd.DataFrame:
    return error_table(run)


def test_one_row_per_point_and_observer_in_order(run: ExplorerRun, table: pd.DataFrame) -> None:
    assert tuple(table.columns) == ERROR_COLUMNS
    expected = [(b, p, t) for b, p in run.points for t in observer_names()]
    assert list(zip(table["block"], table["point"], table["observer"], strict=True)) == expected
    assert list(table["label"]) == [observer_label(t) for _, _, t in expected]
    assert list(table["kind"]) == [module_type_of(p) for _, p, _ in expected]


def test_rows_hold_each_observers_own_summary(run: ExplorerRun, table: pd.DataFrame) -> None:
    for row in table.itertuples():
        key = (row.block, row.point)
        if key == REFUSED:
            continue
        summary = point_summary(run, key, run.point_config(row.observer, key))
        assert (row.mse, row.sqnr_db, row.clipped_fraction, row.failure) == (
            summary.mse,
            summary.sqnr_db,
            summary.clipped_fraction,
            "",
        )


def test_best_is_the_least_mse_of_its_point(table: pd.DataFrame) -> None:
    for (block, point), rows in table.groupby(["block", "point"], sort=False):
        if (block, point) == REFUSED:
            assert not rows["best"].any()
            continue
        assert rows["best"].sum() == 1
        assert rows.loc[rows["best"], "mse"].item() == rows["mse"].min()


def test_a_failure_is_a_typed_value_with_its_reason(run: ExplorerRun, table: pd.DataFrame) -> None:
    results = observer_results(run, REFUSED)
    assert all(isinstance(r, FitFailure) and "refused for the test" in r.reason for r in results.values())
    refused = table[(table["block"] == REFUSED[0]) & (table["point"] == REFUSED[1])]
    assert refused["mse"].isna().all() and refused["sqnr_db"].isna().all()
    assert all("refused for the test" in reason for reason in refused["failure"])


def test_one_failed_observer_leaves_the_others_and_the_winner(run: ExplorerRun) -> None:
    key = (0, "attn_qkv")
    results = {k: observer_results(run, k) for k in run.points}
    failed = observer_names()[0]
    results[key] = {**results[key], failed: FitFailure("invented reason")}
    table = error_table(run, results)
    rows = table[(table["block"] == key[0]) & (table["point"] == key[1])].set_index("observer")
    assert rows.loc[failed, "failure"] == "invented reason" and math.isnan(rows.loc[failed, "mse"])
    fitted = {t: s.mse for t, s in results[key].items() if isinstance(s, ObserverSummary)}
    assert list(rows.index[rows["best"]]) == [min(fitted, key=fitted.__getitem__)]


def test_metric_matrix_and_wins(run: ExplorerRun, table: pd.DataFrame) -> None:
    sqnr = metric_matrix(table, "sqnr_db")
    assert list(sqnr.index) == run.points
    assert list(sqnr.columns) == [observer_label(t) for t in observer_names()]
    for row in table.itertuples():
        assert np.array_equal(sqnr.loc[(row.block, row.point), row.label], row.sqnr_db, equal_nan=True)
    counts = wins(table)
    assert list(counts) == list(sqnr.columns)
    mse = metric_matrix(table, "mse").dropna(how="all")
    assert counts == {label: int((mse.idxmin(axis=1) == label).sum()) for label in sqnr.columns}
