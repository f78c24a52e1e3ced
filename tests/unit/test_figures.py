"""``rnngen.figures``: the seed aggregator, Kendall's τ table and every figure's files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from scipy import stats

from rnngen import figures as fg
from rnngen.bounds import TERM_COLUMNS
from rnngen.errors import DataError

LENGTHS, SIGMAS = (100, 200), (0.0, 0.1, 0.2)
SEEDS = {100: (0, 1, 2), 200: (0, 1)}
ALPHAS = (0.5, 1.0)


def make_runs() -> pa.Table:
    """3 σ × (3 seeds at L=100, 2 at L=200), seeded random errors; one run diverged."""
    rng = np.random.default_rng(0)
    rows = []
    for length in LENGTHS:
        for sigma in SIGMAS:
            for seed in SEEDS[length]:
                train, test = rng.uniform(0.0, 0.2), rng.uniform(0.1, 0.3)
                rows.append(
                    {
                        "run_id": f"L{length}-s{sigma}-{seed}",
                        "L": length,
                        "sigma": sigma,
                        "seed": seed,
                        "hidden": 64,
                        "epochs": 3,
                        "train_error_noisy": train,
                        "test_error_clean": test,
                        "gen_error": test - train,
                        "test_accuracy": 1.0 - test,
                        "status": "done",
                        "seconds": 1.0,
                    }
                )
    rows[4].update(status="diverged", gen_error=float("nan"))
    return pa.Table.from_pylist(rows)


def make_bounds(runs: pa.Table) -> pa.Table:
    """Two α per model (the first is best); every run including the diverged one has rows.

    One best row has bound_thm2 = inf, one has bound_thm2_remark6 = null, and noise_term is
    0 at σ = 0 as in the real pipeline.
    """
    rng = np.random.default_rng(1)
    rows = []
    for run in runs.to_pylist():
        for alpha in ALPHAS:
            row = {c: float(rng.lognormal(0.0, 3.0)) for c in TERM_COLUMNS}
            row["noise_term"] *= run["sigma"] > 0
            row["bound_thm3"] = 1e30 * row["bound_thm3"]
            row.update({k: run[k] for k in ("run_id", "L", "sigma", "seed")})
            rows.append({**row, "alpha": alpha, "alpha_best": alpha == ALPHAS[0]})
    rows[0]["bound_thm2"] = math.inf
    rows[2]["bound_thm2_remark6"] = None
    return pa.Table.from_pylist(rows)


def make_spectrum() -> pa.Table:
    """L=100 certified; L=200 uncertified (λ_min null, one non-positive Ritz value)."""
    return pa.table(
        {
            "L": [100, 200],
            "n": [25000, 25000],
            "dim": [5000, 10000],
            "lambda_min": [2e-5, None],
            "lambda_min_residual": [1e-6, None],
            "lambda_max": [1.1e3, 2.2e3],
            "status": ["certified", "uncertified"],
            "smallest": [
                list(np.geomspace(2e-5, 1e-3, 20)),
                [-1e-9, *np.geomspace(1e-6, 1e-3, 19)],
            ],
            "largest": [[1.1e3, 5.0, 4.0, 3.0, 2.0], [2.2e3, 9.0, 8.0, 7.0, 6.0]],
        }
    )


def assert_figure_files(paths: list[Path], stem: Path, figsize: tuple[float, float]) -> None:
    """PNG and PDF exist, are non-empty, the PDF is a PDF and the PNG is figsize × DPI."""
    assert paths == [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    png, pdf = paths
    with Image.open(png) as image:
        assert image.size == (round(figsize[0] * fg.DPI), round(figsize[1] * fg.DPI))
    assert pdf.read_bytes().startswith(b"%PDF")
    assert not list(stem.parent.glob(".*.tmp"))


# --------------------------------------------------------------------------- aggregator


def test_aggregate_matches_hand_computation() -> None:
    runs = pa.table(
        {
            "L": [100, 100, 100, 100, 100, 200],
            "sigma": [0.3, 0.30000000000000004, 0.3, 0.3, 0.0, 0.1],
            "gen_error": [0.1, 0.2, 0.4, 0.9, -0.05, None],
            "status": ["done", "done", "done", "diverged", "done", "done"],
        }
    )
    rows = fg.aggregate_gen_error(runs)
    # (0.1, 0.2, 0.4): mean 7/30, sample variance 7/300, s.e. sqrt(7/300 / 3) = sqrt(7)/30
    assert [(r["L"], r["sigma"], r["count"]) for r in rows] == [(100, 0.0, 1), (100, 0.3, 3)]
    assert rows[0]["mean"] == -0.05 and rows[0]["sem"] == 0.0
    assert rows[1]["mean"] == pytest.approx(7 / 30, rel=1e-12)
    assert rows[1]["sem"] == pytest.approx(math.sqrt(7) / 30, rel=1e-12)


def test_aggregate_of_fixture_skips_the_diverged_run() -> None:
    counts = {(r["L"], r["sigma"]): r["count"] for r in fg.aggregate_gen_error(make_runs())}
    assert counts == {
        (100, 0.0): 3,
        (100, 0.1): 2,
        (100, 0.2): 3,
        (200, 0.0): 2,
        (200, 0.1): 2,
        (200, 0.2): 2,
    }


# --------------------------------------------------------------------------- figures


def test_fig1_single_panel_has_pinned_pixel_size(tmp_path: Path) -> None:
    stem = tmp_path / "figures" / "fig1_gen_error_L100"
    paths = fg.fig_gen_error(make_runs(), [100], stem)
    assert fg.figure_size(1, 1) == (6.5, 4.95)  # 780 × 594 px at 120 dpi
    assert_figure_files(paths, stem, (6.5, 4.95))


def test_fig2_and_a_length_without_runs(tmp_path: Path) -> None:
    stem = tmp_path / "fig2_gen_error_L200_L300"
    paths = fg.fig_gen_error(make_runs(), [200, 300], stem)
    assert_figure_files(paths, stem, fg.figure_size(1, 2))


def test_spectrum_figure_with_an_uncertified_row(tmp_path: Path) -> None:
    stem = tmp_path / "spectrum"
    assert_figure_files(fg.fig_spectrum(make_spectrum(), stem), stem, fg.figure_size(1, 2))


def test_spectrum_figure_all_uncertified_without_values(tmp_path: Path) -> None:
    spectrum = (
        make_spectrum()
        .drop_columns(["lambda_min", "smallest"])
        .append_column("lambda_min", pa.array([None, None], type=pa.float64()))
        .append_column("smallest", pa.array([None, []], type=pa.list_(pa.float64())))
    )
    spectrum = spectrum.set_column(
        spectrum.schema.get_field_index("status"),
        "status",
        pa.array(["uncertified", "uncertified"]),
    )
    stem = tmp_path / "spectrum_bare"
    assert_figure_files(fg.fig_spectrum(spectrum, stem), stem, fg.figure_size(1, 2))


def test_bound_terms_figure(tmp_path: Path) -> None:
    stem = tmp_path / "bound_terms"
    paths = fg.fig_bound_terms(make_bounds(make_runs()), stem)
    assert_figure_files(paths, stem, fg.figure_size(1, 2, legend_right=True))


def test_bound_vs_gap_figure(tmp_path: Path) -> None:
    runs = make_runs()
    stem = tmp_path / "bound_vs_gap"
    paths = fg.fig_bound_vs_gap(make_bounds(runs), runs, stem)
    assert_figure_files(paths, stem, fg.figure_size(2, 2, legend_right=True))


def test_missing_columns_name_the_table() -> None:
    with pytest.raises(DataError, match="runs table.*gen_error"):
        fg.fig_gen_error(make_runs().drop_columns(["gen_error"]), [100], "unused")


# --------------------------------------------------------------------------- Kendall τ


def test_kendall_table_equals_scipy_on_the_same_pairs() -> None:
    runs = make_runs()
    bounds = make_bounds(runs)
    gap = {r["run_id"]: r["gen_error"] for r in runs.to_pylist() if r["status"] == "done"}
    best = [r for r in bounds.to_pylist() if r["alpha_best"] and r["run_id"] in gap]
    table = fg.kendall_table(bounds, runs).to_pylist()
    assert [r["quantity"] for r in table] == list(fg.KENDALL_QUANTITIES)
    assert set(fg.KENDALL_QUANTITIES) == set(TERM_COLUMNS)
    for row in table:
        pairs = [(b[row["quantity"]], gap[b["run_id"]]) for b in best]
        pairs = [(x, y) for x, y in pairs if x is not None and math.isfinite(x)]
        assert row["n_models"] == len(pairs) and row["n_joined"] == len(best) == 14
        assert row["n_dropped"] == len(best) - len(pairs)
        if len({x for x, _ in pairs}) < 2:  # constant column: τ undefined
            assert math.isnan(row["tau"]) and math.isnan(row["p_value"])
            continue
        expected = stats.kendalltau(*zip(*pairs, strict=True))
        assert row["tau"] == pytest.approx(expected.statistic, abs=1e-12)
        assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    by_name = {r["quantity"]: r for r in table}
    assert by_name["bound_thm2"]["n_models"] == 13  # the inf row is excluded
    assert by_name["bound_thm2_remark6"]["n_models"] == 13  # the null row is excluded
    assert by_name["bound_thm3"]["n_models"] == 14


def test_kendall_table_records_its_method() -> None:
    runs = make_runs()
    table = fg.kendall_table(make_bounds(runs), runs)
    assert table.schema.metadata[b"method"].decode() == fg.KENDALL_METHOD
