"""``rnngen.figures``: every figure's files, the series it draws (one per experiment, never
averaged across experiments), its titles and notes, and reproducible, Type-3-free files.

The statistics drawn come from ``rnngen.analysis`` and are tested there; these tests check
that the figures draw exactly those numbers, kept apart by experiment.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rnngen import analysis, schemas
from rnngen import figures as fg
from rnngen.bounds import TERM_COLUMNS
from rnngen.errors import DataError
from rnngen.io import write_parquet
from rnngen.layout import Layout
from rnngen.specs import RunSpec

LENGTHS, SIGMAS = (100, 200, 300), (0.0, 0.1, 0.2)
ALPHAS = (0.5, 1.0)
EPOCHS = 3


def spec(L: int, sigma: float, seed: int, hidden: int) -> RunSpec:
    return RunSpec(L=L, sigma=sigma, seed=seed, data_key="k", hidden=hidden, epochs=EPOCHS)


def gen_error(s: RunSpec) -> float:
    """Distinct per experiment: hidden 64 near 0.01·L/100 + σ, hidden 32 near 0.5 + σ."""
    base = 0.01 * s.L / 100 if s.hidden == 64 else 0.5
    return base + s.sigma + 0.003 * s.seed


def make_specs() -> list[RunSpec]:
    """Experiment A (hidden 64): every L and σ, seeds 0-2. Experiment B (hidden 32):
    L = 100 only, seeds 0-1, so A has more runs and comes first."""
    a = [spec(L, s, seed, 64) for L in LENGTHS for s in SIGMAS for seed in range(3)]
    b = [spec(100, s, seed, 32) for s in SIGMAS for seed in range(2)]
    return a + b


DIVERGED = spec(200, 0.1, 2, 64).run_id


def make_runs() -> pa.Table:
    rows = []
    for s in make_specs():
        gen, train_noisy = gen_error(s), 0.1 + s.sigma
        diverged = s.run_id == DIVERGED
        rows.append(
            {
                "run_id": s.run_id,
                "group_id": s.group_id,
                "experiment_id": s.experiment_id,
                **s.model_dump(),
                "spec_json": s.to_json(),
                "status": "diverged" if diverged else "done",
                "train_error_noisy": train_noisy,
                "test_error_clean": train_noisy + gen,
                "train_error_clean": 0.1,
                "gen_error": None if diverged else gen,
                "clean_gap": None if diverged else gen + s.sigma - 0.05 * s.seed,
                "test_accuracy": 0.9 - gen,
            }
        )
    return schemas.to_table(rows, schemas.RUNS)


def make_bounds(runs: pa.Table, beta_w: float = 1.5) -> pa.Table:
    """Two α per model (the first is best); β_W = `beta_w` for every model (Remark 6's
    bound null when ≥ 1); noise_term is 0 at σ = 0 as in the real pipeline."""
    rng = np.random.default_rng(1)
    rows = []
    for run in runs.to_pylist():
        for alpha in ALPHAS:
            row = {c: float(rng.lognormal(0.0, 2.0)) for c in TERM_COLUMNS}
            row["noise_term"] *= run["sigma"] > 0
            row["bound_thm3"] *= 1e6
            row["beta_W"] = beta_w
            row["bound_thm2_remark6"] = row["bound_thm2"] if beta_w < 1 else None
            row.update(
                {
                    k: run[k]
                    for k in (
                        "run_id",
                        "group_id",
                        "experiment_id",
                        "L",
                        "sigma",
                        "seed",
                        "hidden",
                        "gen_error",
                    )
                }
            )
            rows.append({**row, "alpha": alpha, "alpha_best": alpha == ALPHAS[0], "status": "ok"})
    return schemas.to_table(rows, schemas.BOUNDS)


def make_spectrum() -> pa.Table:
    """L=100, 200 certified; L=300 uncertified (λ_min null, one non-positive Ritz value)."""
    return schemas.to_table(
        [
            {
                "L": 100,
                "n": 25000,
                "lambda_min": 2e-5,
                "lambda_min_residual": 1e-6,
                "status": "certified",
                "smallest": list(np.geomspace(2e-5, 1e-3, 20)),
            },
            {
                "L": 200,
                "n": 25000,
                "lambda_min": 1.73e-4,
                "lambda_min_residual": 1e-6,
                "status": "certified",
                "smallest": list(np.geomspace(1.73e-4, 1e-2, 20)),
            },
            {
                "L": 300,
                "n": 25000,
                "lambda_min": None,
                "status": "uncertified",
                "smallest": [-1e-9, *np.geomspace(1e-6, 1e-3, 19)],
            },
        ],
        schemas.SPECTRUM,
    )


def history_value(run_id: str, epoch: int, kind: str) -> float:
    """A fixed accuracy per run and epoch, different across seeds."""
    jitter = 0.001 * (int(run_id[:4], 16) % 7)
    return 0.5 + 0.1 * epoch + (0.0 if kind == "train" else -0.05) + jitter


def make_history(runs: pa.Table) -> pa.Table:
    rows = [
        {
            "run_id": r["run_id"],
            "L": r["L"],
            "sigma": r["sigma"],
            "seed": r["seed"],
            "epoch": e,
            "train_loss": 0.5,
            "train_accuracy_noisy": 0.6,
            "train_accuracy_clean": history_value(r["run_id"], e, "train"),
            "test_accuracy": history_value(r["run_id"], e, "test"),
            "eval_rows": 500,
            "seconds": 1.0,
            "eval_seconds": 0.1,
        }
        for r in runs.to_pylist()
        for e in range(1, EPOCHS + 1)
    ]
    return schemas.to_table(rows, schemas.HISTORY)


def ids() -> tuple[str, str]:
    """experiment_ids of A (hidden 64) and B (hidden 32)."""
    return spec(100, 0.0, 0, 64).experiment_id, spec(100, 0.0, 0, 32).experiment_id


def texts(fig) -> str:
    """Every text of a figure (titles, notes, panel sentences, legend), joined."""
    found = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(found)


# --------------------------------------------------------------------------- files


def assert_figure_files(paths: list[Path], stem: Path) -> None:
    """PNG and PDF exist, are non-empty, the PDF is a PDF, no temporary file is left."""
    assert paths == [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    png, pdf = paths
    assert png.stat().st_size > 1000 and pdf.read_bytes().startswith(b"%PDF")
    with Image.open(png) as image:
        assert image.format == "PNG"
    assert not list(stem.parent.glob(".*.tmp"))


def all_figures(tmp_path: Path) -> dict[str, list[Path]]:
    runs, spectrum = make_runs(), make_spectrum()
    bounds, lam = make_bounds(runs), fg.certified_lambda_min(spectrum)
    out = tmp_path / "figures"
    return {
        "fig1_gen_error_L100": fg.fig_gen_error(
            runs, [100], out / "fig1_gen_error_L100", lambda_min=lam
        ),
        "fig2_gen_error_L200_L300": fg.fig_gen_error(
            runs, [200, 300], out / "fig2_gen_error_L200_L300", lambda_min=lam
        ),
        "clean_gap": fg.fig_clean_gap(runs, out / "clean_gap", lambda_min=lam),
        "spectrum": fg.fig_spectrum(spectrum, out / "spectrum"),
        "bound_terms": fg.fig_bound_terms(bounds, out / "bound_terms", runs=runs),
        "bound_vs_gap": fg.fig_bound_vs_gap(bounds, runs, out / "bound_vs_gap"),
        "history": fg.fig_history(make_history(runs), runs, out / "history"),
    }


def test_every_figure_is_written_and_pdfs_have_no_type3_font(tmp_path: Path) -> None:
    fonttype = matplotlib.rcParams["pdf.fonttype"]
    for name, paths in all_figures(tmp_path).items():
        assert_figure_files(paths, tmp_path / "figures" / name)
        pdf = paths[1].read_bytes()
        assert b"/Type3" not in pdf, name
        assert b"/FontFile2" in pdf, name  # the TrueType (Type 42) font program
    assert matplotlib.rcParams["pdf.fonttype"] == fonttype  # rcParams left as they were


def test_png_size_is_figure_size_times_dpi(tmp_path: Path) -> None:
    png, _ = fg.fig_spectrum(make_spectrum(), tmp_path / "spectrum")
    width, height = fg.figure_size(1, 2)
    with Image.open(png) as image:
        assert image.size == (round(width * fg.DPI), round(height * fg.DPI))
        assert fg.DPI >= 150
        # the PNG stores pixels per metre, an integer: the dpi read back is rounded
        assert image.info.get("dpi") == pytest.approx((fg.DPI, fg.DPI), abs=0.05)


def test_png_bytes_are_the_same_when_drawn_twice(tmp_path: Path) -> None:
    runs = make_runs()
    lam = fg.certified_lambda_min(make_spectrum())
    first = fg.fig_gen_error(runs, [200, 300], tmp_path / "a" / "fig2", lambda_min=lam)[0]
    second = fg.fig_gen_error(runs, [200, 300], tmp_path / "b" / "fig2", lambda_min=lam)[0]
    assert first.read_bytes() == second.read_bytes()
    assert b"matplotlib version" not in first.read_bytes()  # no Software chunk
    bounds = make_bounds(runs)
    one = fg.fig_bound_terms(bounds, tmp_path / "c" / "terms", runs=runs)[0]
    two = fg.fig_bound_terms(bounds, tmp_path / "d" / "terms", runs=runs)[0]
    assert one.read_bytes() == two.read_bytes()


# --------------------------------------------------------------------------- Figures 1, 2


def test_two_experiments_are_two_series_never_averaged() -> None:
    runs = make_runs()
    a, b = ids()
    fig = fg.draw_gen_error(runs, [100])
    drawn = fg.series(fig.axes[0])
    assert {k for k in drawn if k.startswith("mean:")} == {f"mean:{a}", f"mean:{b}"}
    for eid, hidden, seeds in ((a, 64, 3), (b, 32, 2)):
        x, y = drawn[f"mean:{eid}"]
        assert list(x) == list(SIGMAS)
        expected = [
            np.mean([gen_error(spec(100, s, k, hidden)) for k in range(seeds)]) for s in SIGMAS
        ]
        np.testing.assert_allclose(y, expected, rtol=1e-12)
        _, seed_y = drawn[f"seeds:{eid}"]
        assert sorted(seed_y) == pytest.approx(
            sorted(gen_error(spec(100, s, k, hidden)) for s in SIGMAS for k in range(seeds))
        )
    # the largest experiment first in the legend, each labelled by its settings
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "hidden 64" in legend[0] and "hidden 32" in legend[1]
    assert "n = 3 seeds" in legend[0] and "n = 2 seeds" in legend[1]


def test_single_seeds_are_shifted_by_seed_within_the_spread() -> None:
    runs = make_runs()
    a, _ = ids()
    x, y = fg.series(fg.draw_gen_error(runs, [100]).axes[0])[f"seeds:{a}"]
    span = max(SIGMAS) - min(SIGMAS)
    offsets = x - np.repeat(SIGMAS, 3)
    assert np.all(np.abs(offsets) <= fg.SEED_SPREAD * span + 1e-12)
    assert len(set(np.round(offsets[:3], 12))) == 3  # three seeds, three positions
    np.testing.assert_allclose(offsets[:3], offsets[3:6])  # a seed keeps its offset


def test_diverged_run_is_left_out_and_counted() -> None:
    runs = make_runs()
    a, _ = ids()
    fig = fg.draw_gen_error(runs, [200, 300])
    _, seed_y = fg.series(fig.axes[0])[f"seeds:{a}"]
    assert len(seed_y) == 3 * 3 - 1
    assert "excluded: 1 diverged" in fig.get_suptitle()
    assert any("n=2" in t.get_text() for t in fig.axes[0].texts)  # unequal seed counts


def test_lambda_min_in_the_panel_titles_and_the_caveat() -> None:
    lam = fg.certified_lambda_min(make_spectrum())
    assert lam == {100: 2e-5, 200: 1.73e-4}
    fig = fg.draw_gen_error(make_runs(), [200, 300], lambda_min=lam)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["L = 200, λ_min(E xxᵀ) = 1.73e-04", "L = 300, λ_min(E xxᵀ) not certified"]
    assert "subtracts the noisy training error, which rises with σ by itself" in (
        fig.get_suptitle().replace("\n", " ")
    )
    assert fg.draw_gen_error(make_runs(), [100]).axes[0].get_title() == "L = 100"


def test_a_length_without_runs_says_so() -> None:
    fig = fg.draw_gen_error(make_runs(), [100, 400])
    assert "no finished runs at this L" in [t.get_text() for t in fig.axes[1].texts]


def test_missing_columns_name_the_table() -> None:
    with pytest.raises(DataError, match="runs table.*gen_error"):
        fg.draw_gen_error(make_runs().drop_columns(["gen_error"]), [100])
    with pytest.raises(DataError, match="at least one"):
        fg.draw_gen_error(make_runs(), [])


# --------------------------------------------------------------------------- clean gap


def test_clean_gap_has_a_panel_per_length_and_draws_the_clean_gap() -> None:
    runs = make_runs()
    a, b = ids()
    fig = fg.draw_clean_gap(runs)
    assert [ax.get_title() for ax in fig.axes] == [f"L = {L}" for L in LENGTHS]
    for ax, L in zip(fig.axes, LENGTHS, strict=True):
        drawn = fg.series(ax)
        for eid in (a, b):
            want = [
                c.mean
                for c in analysis.cells(runs, "clean_gap")
                if c.experiment_id == eid and c.L == L
            ]
            if want:
                np.testing.assert_allclose(drawn[f"mean:{eid}"][1], want)
            else:
                assert f"mean:{eid}" not in drawn
    assert "clean" in fig.axes[0].get_ylabel()


# --------------------------------------------------------------------------- bound terms


def test_bound_terms_draws_every_term_and_total_in_its_own_panel() -> None:
    runs = make_runs()
    bounds = make_bounds(runs)
    a, b = ids()
    fig = fg.draw_bound_terms(bounds, runs=runs)
    names = [q for q in fg.TERM_PANELS if q != "bound_thm2_remark6"]  # β_W ≥ 1: undefined
    per = 1 + len(names)  # the level panel, then one panel per term and total
    assert len(fig.axes) == 2 * per  # two experiments, unused grid cells removed
    cells = {(c.L, c.sigma): c for c in analysis.term_cells(bounds) if c.experiment_id == a}
    for ax, q in zip(fig.axes[1:per], names, strict=True):
        drawn = fg.series(ax)
        assert set(drawn) == {f"rel:{a}:{q}:{L}" for L in LENGTHS}  # one line per L, no more
        x, y = drawn[f"rel:{a}:{q}:100"]
        ref = min(s for s in SIGMAS if cells[(100, s)].means[q] > 0)
        want = [
            math.log10(cells[(100, s)].means[q]) - math.log10(cells[(100, ref)].means[q]) for s in x
        ]
        np.testing.assert_allclose(y, want, atol=1e-12)
        assert y[0] == 0.0  # the first point drawn is the reference itself
        assert fg.PANEL_TITLES[q] in ax.get_title()
    noise = fig.axes[1 + names.index("noise_term")]
    x, _ = fg.series(noise)[f"rel:{a}:noise_term:100"]
    assert list(x) == [0.1, 0.2]  # 0 at σ = 0: measured from the smallest σ > 0, and said so
    assert "σ = 0.1" in noise.get_title()
    assert any("exactly 0 at σ = 0" in t.get_text() for t in noise.texts)
    # the level panel: one bar per quantity and L, at log10 of the value at σ = 0
    level = fig.axes[0]
    bars = [r for r in level.patches if r.get_gid() == "level:100"]
    assert len(bars) == len(names)
    thm3 = bars[names.index("bound_thm3")]
    assert thm3.get_width() == pytest.approx(math.log10(cells[(100, 0.0)].means["bound_thm3"]))
    # experiment B only has L = 100, and its block is labelled by its settings
    assert set(fg.series(fig.axes[per + 1])) == {f"rel:{b}:margin_loss:100"}
    assert "hidden 32" in fig.axes[per].get_title()
    assert "Remark 6's r is not drawn" in fig.get_suptitle()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:3] == ["L = 100", "L = 200", "L = 300"]


def test_bound_terms_without_runs_and_with_remark6() -> None:
    runs = make_runs()
    one = runs.filter(pa.array([e == ids()[0] for e in analysis.strings(runs, "experiment_id")]))
    fig = fg.draw_bound_terms(make_bounds(one, beta_w=0.5))
    assert len(fig.axes) == 1 + len(fg.TERM_PANELS)  # Remark 6 defined: its own panel
    remark6 = fig.axes[1 + fg.TERM_PANELS.index("bound_thm2_remark6")]
    assert f"rel:{ids()[0]}:bound_thm2_remark6:100" in fg.series(remark6)
    assert "Remark 6's r is not drawn" not in fig.get_suptitle()


# --------------------------------------------------------------------------- bounds vs gap


def test_bound_vs_gap_leaves_out_remark6_with_a_sentence_when_no_beta_w_is_below_one() -> None:
    runs = make_runs()
    a, _ = ids()
    fig = fg.draw_bound_vs_gap(make_bounds(runs, beta_w=1.5), runs)
    assert len(fig.axes) == 2 * 3  # one row per experiment: no empty Remark 6 panel
    assert not any("Remark 6" in ax.get_title() for ax in fig.axes)
    n_a = sum(1 for r in runs.to_pylist() if r["experiment_id"] == a and r["status"] == "done")
    sentence = fig.get_suptitle().replace("\n", " ")
    assert f"it needs β_W < 1; all {n_a} models have β_W ≥ 1 (median β_W = 1.5)" in sentence
    fine = fg.draw_bound_vs_gap(make_bounds(runs, beta_w=0.5), runs)
    assert len(fine.axes) == 2 * 4
    assert "Remark 6's bound is not drawn" not in texts(fine)


def test_bound_vs_gap_prints_the_tau_of_the_kendall_table_within_L_and_psi() -> None:
    runs = make_runs()
    bounds = make_bounds(runs)
    a, b = ids()
    fig = fg.draw_bound_vs_gap(bounds, runs)
    rows = analysis.kendall_rows(bounds, runs)
    holm = analysis.kendall_holm(rows)
    by = {
        (r["experiment_id"], r["scope"], r["quantity"]): (r, p)
        for r, p in zip(rows, holm, strict=True)
    }
    data = analysis.joined(bounds, runs)
    shown = [q for q in fg.SCATTER_QUANTITIES if q != "bound_thm2_remark6"]
    for block, eid in ((0, a), (3, b)):
        for ax, q in zip(fig.axes[block : block + 3], shown, strict=True):
            row, p = by[(eid, "all", q)]
            title = ax.get_title()
            if math.isfinite(row["tau"]):
                assert f"Kendall τ = {row['tau']:.3f}" in title
                assert f"Holm {p:.2g}" in title and f"{row['n_models']} models" in title
            else:
                assert "undefined" in title
            psi = analysis.granulated_kendall(data, data["experiment_id"] == eid, q).psi
            assert (f"Ψ = {psi:+.2f}" if math.isfinite(psi) else "Ψ undefined") in title
            within = by[(eid, "L=100", q)][0]["tau"]
            assert (f"100: {within:+.2f}" if math.isfinite(within) else "—") in title


def test_bound_figures_draw_terms_near_the_float64_limit(tmp_path: Path) -> None:
    """Theorem 3's terms of a paper-scale model reach ~1e302; drawing and saving them must
    not overflow (a log axis's margins and ticks did), and the plotted value is log10."""
    runs = make_runs()
    bounds = make_bounds(runs)
    huge = {
        c: pa.array([v * 1e295 for v in bounds.column(c).to_pylist()], pa.float64())
        for c in ("bound_thm3", "rademacher_norm1_term")
    }
    for c, col in huge.items():
        bounds = bounds.set_column(bounds.schema.get_field_index(c), c, col)
    terms = fg.draw_bound_terms(bounds, runs=runs)
    terms.savefig(tmp_path / "terms.png")
    names = [q for q in fg.TERM_PANELS if q != "bound_thm2_remark6"]
    bars = [r for r in terms.axes[0].patches if r.get_gid() == "level:100"]
    level = bars[names.index("bound_thm3")].get_width()  # log10 of the value at σ = 0
    assert 290 < level < 308
    fg.draw_bound_vs_gap(bounds, runs).savefig(tmp_path / "gap.png")


# --------------------------------------------------------------------------- history


def test_history_means_over_seeds_per_sigma_and_experiment() -> None:
    runs = make_runs()
    history = make_history(runs)
    a, b = ids()
    fig = fg.draw_history(history, runs)
    axes = np.asarray(fig.axes).reshape(4, 3)  # per experiment: training row, test row
    for row, kind in ((0, "train"), (1, "test")):
        drawn = fg.series(axes[row, 0])
        assert len(drawn) == len(SIGMAS)  # one curve per σ
        x, y = drawn[f"{kind}:{a}:100:0.1"]
        assert list(x) == [1, 2, 3]
        values = [
            [history_value(spec(100, 0.1, k, 64).run_id, e, kind) for k in range(3)]
            for e in (1, 2, 3)
        ]
        np.testing.assert_allclose(y, [np.mean(v) for v in values])
        band = next(
            c for c in axes[row, 0].collections if c.get_gid() == f"band:{kind}:{a}:100:0.1"
        )
        top = band.get_paths()[0].vertices[:, 1].max()  # mean + s.e. at some epoch
        se = [np.std(v, ddof=1) / math.sqrt(3) for v in values]
        assert top == pytest.approx(max(np.mean(v) + e for v, e in zip(values, se, strict=True)))
    x, y = fg.series(axes[2, 0])[f"train:{b}:100:0.2"]
    want = [
        np.mean([history_value(spec(100, 0.2, k, 32).run_id, e, "train") for k in range(2)])
        for e in (1, 2, 3)
    ]
    np.testing.assert_allclose(y, want)
    # the diverged run (L = 200, σ = 0.1, seed 2) is left out of its mean
    _, y = fg.series(axes[0, 1])[f"train:{a}:200:0.1"]
    want = [
        np.mean([history_value(spec(200, 0.1, k, 64).run_id, e, "train") for k in range(2)])
        for e in (1, 2, 3)
    ]
    np.testing.assert_allclose(y, want)
    assert "1 run not done left out" in fig.get_suptitle()
    # the y-range is the data's (no chance line at 0.5 pulling it down)
    low, _ = axes[0, 0].get_ylim()
    assert low > 0.5


# --------------------------------------------------------------------------- spectrum


def test_spectrum_marks_the_papers_lambda_min_and_has_integer_ticks() -> None:
    fig = fg.draw_spectrum(make_spectrum())
    fig.canvas.draw()
    left, right = fig.axes[0], fig.axes[1]
    x, y = fg.series(left)["paper"]
    assert list(x) == [100, 200, 300] and list(y) == [4e-4, 1e-4, 2.5e-5]
    assert [t for t in left.get_xticks()] == [100, 200, 300]
    assert all(float(t).is_integer() for t in right.get_xticks())
    lines = {ln.get_gid(): ln for ln in right.get_lines() if ln.get_gid()}
    assert lines["paper:200"].get_ydata()[0] == 1e-4
    one = fg.draw_spectrum(make_spectrum().slice(0, 1))  # L = 100 only
    assert list(fg.series(one.axes[0])["paper"][0]) == [100]
    assert list(one.axes[0].get_xticks()) == [100]


# --------------------------------------------------------------------------- verdicts


def test_gen_error_panels_carry_the_holm_adjusted_verdict_in_a_corner() -> None:
    runs = make_runs()
    a, _ = ids()
    fig = fg.draw_gen_error(runs, [100, 200])
    infs = {i.L: i for i in analysis.inference(runs, a) if i.quantity == "gen_error"}
    for ax, L in zip(fig.axes, (100, 200), strict=True):
        (box,) = [t for t in ax.texts if t.get_gid() == "verdict"]
        text = box.get_text()
        assert text == "blue series: " + fg.verdict_text(infs[L])  # two experiments drawn
        assert f"verdict (Holm-adjusted): {infs[L].holm_verdict}" in text
        assert "p Holm" in text and "95 % interval" in text
    clean = fg.draw_clean_gap(runs)
    assert all(any(t.get_gid() == "verdict" for t in ax.texts) for ax in clean.axes)


def test_the_verdict_text_gives_each_adjusted_p_that_exists() -> None:
    from tests.fixtures import make_runs as u_runs

    runs = u_runs(lengths=(100,))
    (inf,) = [
        i
        for i in analysis.inference(runs, analysis.experiments(runs)[0])
        if i.quantity == "gen_error"
    ]
    text = fg.verdict_text(inf)
    assert text.splitlines()[0] == "verdict (Holm-adjusted): reproduced"
    assert "p Holm (σ* < σ = 0)" in text and "p Holm (σ* < σ = 0.4)" in text
    assert fg.verdict_text(None) == "no verdict: fewer than two σ at this L"


# ---------------------------------------------------------------- one L, one σ: the layout


def _only(table: pa.Table, name: str, value: float) -> pa.Table:
    return table.filter(pa.array([v == value for v in table.column(name).to_pylist()]))


def every_figure(runs: pa.Table, spectrum: pa.Table) -> dict[str, object]:
    bounds, lam = make_bounds(runs), fg.certified_lambda_min(spectrum)
    lengths = sorted({int(x) for x in analysis.column(runs, "L")})
    return {
        "gen_error": fg.draw_gen_error(runs, lengths, lambda_min=lam),
        "fig2": fg.draw_gen_error(runs, [200, 300], lambda_min=lam),
        "clean_gap": fg.draw_clean_gap(runs, lambda_min=lam),
        "spectrum": fg.draw_spectrum(spectrum),
        "bound_terms": fg.draw_bound_terms(bounds, runs=runs),
        "bound_vs_gap": fg.draw_bound_vs_gap(bounds, runs),
        "history": fg.draw_history(make_history(runs), runs),
    }


def _inside(inner, outer, tol: float = 1.0) -> bool:
    return (
        inner.x0 >= outer.x0 - tol
        and inner.y0 >= outer.y0 - tol
        and inner.x1 <= outer.x1 + tol
        and inner.y1 <= outer.y1 + tol
    )


def _data_points(ax) -> np.ndarray:
    """Every drawn data point of `ax` in data coordinates (lines, scatters, bands, bars)."""
    from matplotlib.collections import PathCollection, PolyCollection

    pts = [
        np.column_stack(ln.get_data())
        for ln in ax.get_lines()
        if ln.get_transform() is ax.transData
    ]
    for c in ax.collections:
        if isinstance(c, PathCollection) and c.get_offset_transform() is ax.transData:
            pts.append(np.asarray(c.get_offsets()))
        elif isinstance(c, PolyCollection) and c.get_transform() is ax.transData:
            pts += [p.vertices for p in c.get_paths()]
    for r in ax.patches:
        if r.get_gid():
            x, y, w, h = r.get_x(), r.get_y(), r.get_width(), r.get_height()
            pts.append(np.array([[x, y], [x + w, y + h]]))
    pts = [np.asarray(p, dtype=float).reshape(-1, 2) for p in pts if np.size(p)]
    return np.vstack(pts) if pts else np.empty((0, 2))


def assert_laid_out(fig, name: str) -> None:
    """Nothing clipped, nothing under a legend: every axes (its labels, ticks, title and
    notes) and every legend inside the figure; the figure title and the panel titles clear
    of the legends; every data point inside its axes' limits; a verdict box inside its
    panel and over no data point."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    page = fig.bbox
    legends = [lg.get_window_extent(r) for lg in fig.legends]
    assert fig.get_suptitle(), name
    title = fig._suptitle.get_window_extent(r)
    assert _inside(title, page), f"{name}: the title is cut off"
    for box in legends:
        assert _inside(box, page), f"{name}: a legend is cut off"
        assert not box.overlaps(title), f"{name}: the title runs under the legend"
    for ax in fig.axes:
        where = f"{name}, panel {ax.get_title()!r}"
        assert _inside(ax.get_tightbbox(r), page), f"{where}: cut off at the figure's edge"
        for box in legends:
            assert not box.overlaps(ax.bbox), f"{where}: the legend covers the panel"
            if ax.get_title():
                assert not box.overlaps(ax.title.get_window_extent(r)), f"{where}: title"
        pts = _data_points(ax)
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        assert inside.all(), f"{where}: {int((~inside).sum())} data points outside the axes"
        for text in (t for t in ax.texts if t.get_gid() == "verdict"):
            box = text.get_bbox_patch().get_window_extent(r)
            assert _inside(box, ax.bbox), f"{where}: the verdict sticks out of its panel"
            shown = ax.transData.transform(pts) if len(pts) else np.empty((0, 2))
            hidden = [p for p in shown if box.contains(*p)]
            assert not hidden, f"{where}: the verdict hides {len(hidden)} data points"


def test_every_figure_is_laid_out_with_the_full_grid() -> None:
    for name, fig in every_figure(make_runs(), make_spectrum()).items():
        assert_laid_out(fig, name)


def test_every_figure_is_laid_out_with_one_L() -> None:
    runs = _only(make_runs(), "L", 100)
    figs = every_figure(runs, make_spectrum().slice(0, 1))
    for name, fig in figs.items():
        assert_laid_out(fig, name)
    # Figure 2 drawn from a grid without L = 200, 300 says so in its panels
    assert all(
        "no finished runs at this L" in [t.get_text() for t in ax.texts] for ax in figs["fig2"].axes
    )
    assert len(figs["bound_vs_gap"].axes) == 2 * 3


def test_every_figure_is_laid_out_with_one_sigma() -> None:
    runs = _only(make_runs(), "sigma", 0.1)
    figs = every_figure(runs, make_spectrum())
    for name, fig in figs.items():
        assert_laid_out(fig, name)
    verdicts = [t.get_text() for t in figs["gen_error"].axes[0].texts if t.get_gid() == "verdict"]
    assert verdicts and "no verdict: fewer than two σ" in verdicts[0]
    notes = texts(figs["bound_terms"])
    assert "one σ: no σ effect to show" in notes


def test_every_figure_is_laid_out_with_one_L_and_one_experiment() -> None:
    runs = _only(_only(make_runs(), "L", 100), "hidden", 64)
    for name, fig in every_figure(runs, make_spectrum().slice(0, 1)).items():
        assert_laid_out(fig, name)


# --------------------------------------------------------------------------- the flow


def test_flow_task_draws_everything_and_recognises_its_stamp_elsewhere(tmp_path: Path) -> None:
    from rnngen_tasks.figures import draw_figures

    out = tmp_path / "one"
    layout = Layout.at(out)
    runs = make_runs()
    write_parquet(runs, layout.runs, {"stage": "train"})
    write_parquet(make_spectrum(), layout.spectrum, {"stage": "spectrum"})
    write_parquet(make_bounds(runs), layout.bounds, {"stage": "bounds"})
    paths, drawn = draw_figures.fn(str(out))
    assert drawn
    names = {Path(p).name for p in paths}
    assert {
        "fig1_gen_error_L100.png",
        "fig2_gen_error_L200_L300.pdf",
        "clean_gap.png",
        "bound_terms.png",
        "bound_vs_gap.png",
        "spectrum.png",
        "kendall_tau.parquet",
    } <= names
    assert "history.png" not in names  # no history.parquet in this folder
    stamp = (layout.figures / ".drawn.json").read_text()
    assert str(tmp_path) not in stamp  # paths relative to the output folder
    tau = pq.read_table(layout.results / "kendall_tau.parquet")
    assert tau.schema.names == schemas.KENDALL.names
    copy = tmp_path / "two"
    shutil.copytree(out, copy)
    again, drawn = draw_figures.fn(str(copy))
    assert not drawn and again == [p.replace(str(out), str(Layout.at(copy).out)) for p in paths]
    write_parquet(
        make_history(runs), Layout.at(copy).results / "history.parquet", {"stage": "train"}
    )
    third, drawn = draw_figures.fn(str(copy))  # a new input: drawn again, with history
    assert drawn and any(p.endswith("history.png") for p in third)


def test_flow_task_says_that_figure_2_is_skipped_for_a_grid_of_one_L(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rnngen_tasks.figures import draw_figures

    out = tmp_path / "one"
    layout = Layout.at(out)
    runs = _only(make_runs(), "L", 100)
    write_parquet(runs, layout.runs, {"stage": "train"})
    write_parquet(make_spectrum().slice(0, 1), layout.spectrum, {"stage": "spectrum"})
    write_parquet(make_bounds(runs), layout.bounds, {"stage": "bounds"})
    with caplog.at_level("INFO", logger="rnngen"):
        paths, _ = draw_figures.fn(str(out))
    assert not any("fig2" in p for p in paths) and any("fig1" in p for p in paths)
    assert "Figure 2 (L = 200 and 300) skipped: this grid has L = 100 only." in caplog.text


def test_per_experiment_figures_draw_at_most_the_cap_and_say_how_many_are_left_out(
    monkeypatch,
) -> None:
    runs = make_runs()
    bounds = make_bounds(runs)
    monkeypatch.setattr(fg, "MAX_EXPERIMENT_BLOCKS", 1)  # the fixtures hold two experiments
    note = "The first 1 of 2 experiments (most models first); the other 1 are in results/"
    names = [q for q in fg.TERM_PANELS if q != "bound_thm2_remark6"]
    terms = fg.draw_bound_terms(bounds, runs=runs)
    assert len(terms.axes) == 1 + len(names)  # one block: experiment A's
    gap = fg.draw_bound_vs_gap(bounds, runs)
    history = fg.draw_history(make_history(runs), runs)
    for fig in (terms, gap, history):
        assert note in texts(fig)
    monkeypatch.setattr(fg, "MAX_EXPERIMENT_BLOCKS", 2)
    assert note not in texts(fg.draw_bound_terms(bounds, runs=runs))
