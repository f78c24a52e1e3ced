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


def test_bound_terms_draws_every_term_and_total_apart() -> None:
    runs = make_runs()
    bounds = make_bounds(runs)
    a, b = ids()
    fig = fg.draw_bound_terms(bounds, runs=runs)
    axes = np.asarray(fig.axes).reshape(4, 3)  # 2 experiments × (terms, totals), 3 L
    cells = [c for c in analysis.term_cells(bounds) if c.experiment_id == a and c.L == 100]
    top, bottom = fg.series(axes[0, 0]), fg.series(axes[1, 0])
    assert set(top) == {f"term:{q}" for q in analysis.THM3_TERMS}
    assert set(bottom) == {"total:bound_thm3", "total:bound_thm2", "total:zhang_order"}
    for q in ("margin_loss", "rademacher_norm1_term", "confidence_term"):
        np.testing.assert_allclose(top[f"term:{q}"][1], np.log10([c.means[q] for c in cells]))
    np.testing.assert_allclose(
        bottom["total:bound_thm3"][1], np.log10([c.means["bound_thm3"] for c in cells])
    )
    x, _ = top["term:noise_term"]
    assert list(x) == [0.1, 0.2]  # σ = 0 has noise term 0: log10 is −∞, not drawn ...
    notes = [t.get_text() for t in axes[0, 0].texts]
    assert any("noise term = 0 exactly at σ = 0" in n for n in notes)  # ... and said so
    assert not any("noise_term not drawn" in n for n in notes)
    # terms and totals differ in style: solid filled vs broken hollow
    term_line = next(ln for ln in axes[0, 0].get_lines() if ln.get_gid() == "term:margin_loss")
    total_line = next(ln for ln in axes[1, 0].get_lines() if ln.get_gid() == "total:bound_thm3")
    assert term_line.get_linestyle() == "-" and total_line.get_linestyle() == "--"
    assert total_line.get_markerfacecolor() == "none"
    # experiment B only has L = 100: its other panels say so
    assert "no models at this L" in [t.get_text() for t in axes[2, 1].texts]
    assert b in {c.experiment_id for c in analysis.term_cells(bounds)}
    assert "hidden 32" in axes[2, 0].get_title()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(legend) == len(set(legend)) == 5 + 3 + 1


def test_bound_terms_without_runs_and_with_remark6() -> None:
    runs = make_runs()
    one = runs.filter(pa.array([e == ids()[0] for e in analysis.strings(runs, "experiment_id")]))
    fig = fg.draw_bound_terms(make_bounds(one, beta_w=0.5))
    assert len(fig.axes) == 2 * 3
    assert "total:bound_thm2_remark6" in fg.series(fig.axes[3])


# --------------------------------------------------------------------------- bounds vs gap


def test_bound_vs_gap_remark6_sentence_when_every_beta_w_is_at_least_one() -> None:
    runs = make_runs()
    a, _ = ids()
    fig = fg.draw_bound_vs_gap(make_bounds(runs, beta_w=1.5), runs)
    assert len(fig.axes) == 2 * 4  # one 2 × 2 block per experiment
    n_a = sum(1 for r in runs.to_pylist() if r["experiment_id"] == a and r["status"] == "done")
    remark6 = fig.axes[2]
    sentence = " ".join(t.get_text() for t in remark6.texts).replace("\n", " ")
    assert f"Remark 6 needs β_W < 1; all {n_a} models have β_W ≥ 1 (median β_W = 1.5)" in (sentence)
    fine = fg.draw_bound_vs_gap(make_bounds(runs, beta_w=0.5), runs)
    assert "Remark 6 needs" not in texts(fine)


def test_bound_vs_gap_prints_the_tau_of_the_kendall_table() -> None:
    runs = make_runs()
    bounds = make_bounds(runs)
    a, b = ids()
    fig = fg.draw_bound_vs_gap(bounds, runs)
    rows = {
        (r["experiment_id"], r["quantity"]): r
        for r in analysis.kendall_rows(bounds, runs)
        if r["scope"] == "all"
    }
    for block, eid in ((0, a), (4, b)):
        for ax, q in zip(fig.axes[block : block + 4], fg.SCATTER_QUANTITIES, strict=True):
            row = rows[(eid, q)]
            if math.isfinite(row["tau"]):
                assert f"Kendall τ = {row['tau']:.3f}" in ax.get_title()
                assert f"{row['n_models']} models" in ax.get_title()
            else:
                assert "undefined" in ax.get_title()


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
    drawn = fg.series(terms.axes[3])["total:bound_thm3"][1]
    assert 290 < float(np.min(drawn)) and float(np.max(drawn)) < 308
    fg.draw_bound_vs_gap(bounds, runs).savefig(tmp_path / "gap.png")


# --------------------------------------------------------------------------- history


def test_history_means_over_seeds_per_sigma_and_experiment() -> None:
    runs = make_runs()
    history = make_history(runs)
    a, b = ids()
    fig = fg.draw_history(history, runs)
    axes = np.asarray(fig.axes).reshape(2, 3)
    drawn = fg.series(axes[0, 0])
    assert len(drawn) == 2 * len(SIGMAS)  # train and test per σ
    for kind in ("train", "test"):
        x, y = drawn[f"{kind}:{a}:100:0.1"]
        assert list(x) == [1, 2, 3]
        want = [
            np.mean([history_value(spec(100, 0.1, k, 64).run_id, e, kind) for k in range(3)])
            for e in (1, 2, 3)
        ]
        np.testing.assert_allclose(y, want)
    x, y = fg.series(axes[1, 0])[f"train:{b}:100:0.2"]
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
