"""``rnngen.report``: REPORT.md from hand-made result tables."""

from __future__ import annotations

from rnngen import analysis as A
from rnngen import schemas
from rnngen.io import with_metadata
from rnngen.report import Inputs, pval, render
from tests.fixtures import make_bounds, make_runs, make_spectrum, run_row, spec


def fixture_report(**runs_kwargs) -> str:
    runs = make_runs(**runs_kwargs)
    return render(
        Inputs(
            runs=runs,
            spectrum=make_spectrum(),
            bounds=make_bounds(runs),
            figures=("fig1_gen_error_L100.png", "spectrum.png"),
        )
    )


def test_the_rule_comes_before_the_numbers_and_each_L_gets_its_verdicts():
    text = fixture_report()
    rule = text.index("The rule (when it was written")
    table = text.index("| L | quantity | σ* |")
    assert rule < table
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| 100 | generalization") or line.startswith("| 200 | clean gap")
    ]
    assert "**reproduced**" in rows[0]  # the fixture's gen_error is a U
    assert "**not reproduced**" in rows[1]  # its clean gap falls monotonically
    assert (
        "- U-shape in the paper's generalization error, Holm-adjusted: L = 100: **reproduced** "
        "(σ* = 0.2, 95 % interval [0.2, 0.2]; p Holm < 0.001; no rise ≥ 0.005: p Holm "
    ) in text


def test_lambda_min_is_set_beside_the_papers_with_the_ratio():
    text = fixture_report()
    row = next(line for line in text.splitlines() if line.startswith("| 100 | 25000 |"))
    assert "6.000e-04" in row and "4.0e-04" in row and "| 1.50 |" in row  # ours / paper


def test_bounds_tables_name_the_dominant_term_and_kendall_scopes():
    text = fixture_report()
    assert "1-norm term (k = " in text
    assert "τ, all" in text and "τ, L=100" in text and "τ, L=200" in text
    assert "fixture grid" in text  # the α rule recorded with the bounds
    assert "β_W^L" in text


def test_figures_are_linked_by_relative_path_only_when_drawn():
    text = fixture_report()
    assert "](figures/fig1_gen_error_L100.png)" in text and "](figures/spectrum.png)" in text
    assert "bound_terms.png" not in text


def test_other_experiments_are_listed_not_averaged():
    odd = run_row(spec(100, 0.2, 0, hidden=8, epochs=1), 0.9)
    text = fixture_report(extra_rows=[odd])
    assert "## Runs not included" in text and "hidden 8, 1 epochs" in text
    cell = next(line for line in text.splitlines() if line.startswith("| 100 | 0.2 | 5 |"))
    assert "0.9" not in cell


def test_provenance_and_wall_times_come_from_the_tables():
    text = fixture_report()
    assert "Profile: `fixture`" in text
    assert "Test CPU (2 cores)" in text
    # 30 cells of 60-64 s, first start 08:09 (08:10 minus 60 s) to last finish 08:14
    assert "| training | 31 min 00 s | 5 min 00 s |" in text
    assert "| spectrum | 0 min 25 s | — |" in text


def test_the_same_tables_give_the_same_text():
    runs = make_runs()
    inputs = Inputs(runs=runs, spectrum=make_spectrum(), bounds=make_bounds(runs))
    assert render(inputs) == render(inputs)


def test_report_quantities_are_the_analysis_ones():
    runs = make_runs()
    (v,) = [
        v
        for v in A.verdicts(runs, A.experiments(runs)[0])
        if v.quantity == "gen_error" and v.L == 200
    ]
    text = fixture_report()
    row = next(line for line in text.splitlines() if line.startswith("| 200 | generalization"))
    assert f"| {v.sigma_star:g} |" in row


def test_another_profile_is_set_beside_the_paper_profile():
    paper = make_runs()
    longer = make_runs(lengths=(100,), epochs=40)
    text = render(
        Inputs(runs=longer, spectrum=make_spectrum(), bounds=make_bounds(longer), baseline=paper)
    )
    assert "## Beside the paper profile" in text and "hidden 128, 10 epochs" in text
    row = next(
        line for line in text.splitlines() if line.startswith("| 100 | 0.2 |") and " vs " in line
    )
    assert row.count(" vs ") == 3
    assert "## Beside the paper profile" not in render(
        Inputs(runs=paper, spectrum=make_spectrum(), bounds=make_bounds(paper), baseline=paper)
    )


def test_bound_facts_count_vacuous_bounds_and_best_alphas_at_the_grid_edge():
    import pyarrow as pa

    from rnngen.report import bound_facts

    runs = make_runs()
    bounds = make_bounds(runs)
    eid = A.strings(runs, "experiment_id")[0]
    n = len(A.strings(A.of_experiment(A.best_rows(bounds), eid), "run_id"))
    text = " ".join(bound_facts(bounds, eid))
    assert f"exceeds 1 (vacuous: an error is at most 1) for {n} of {n} models" in text
    assert f"For {n} of {n} models the best α is the largest of the grid" in text
    # the best α moved inside the grid (α = 1 of {1, 2}) and one bound below 1
    alpha = A.column(bounds, "alpha")
    moved = bounds.set_column(
        bounds.schema.get_field_index("alpha_best"), "alpha_best", pa.array(alpha == 1.0)
    )
    thm3 = A.column(moved, "bound_thm3").copy()
    thm3[0] = 0.5  # the first row: α = 1, now a best row
    moved = moved.set_column(
        moved.schema.get_field_index("bound_thm3"), "bound_thm3", pa.array(thm3)
    )
    text = " ".join(bound_facts(moved, eid))
    assert f"for {n - 1} of {n} models" in text
    assert "largest of the grid" not in text


def test_overview_gives_one_row_per_folder_and_L_with_both_verdicts():
    from rnngen.report import overview

    runs = make_runs()
    inputs = Inputs(runs=runs, spectrum=make_spectrum(), bounds=make_bounds(runs), figures=())
    lines = overview([("one", inputs), ("two", inputs)])
    assert lines[0].startswith(
        "| profile | L | σ | seeds | generalization error (paper), Holm-adjusted |"
    )
    rows = [line for line in lines[2:] if line.startswith("| `")]
    Ls = sorted({v.L for v in A.verdicts(runs, A.experiments(runs)[0])})
    assert len(rows) == 2 * len(Ls)
    first = rows[0].split(" | ")
    assert first[0] == "| `one`" and first[1] == str(Ls[0])
    assert "**reproduced** (σ* = 0.2" in first[4]  # the fixture's gen_error is a U at L = 100
    assert "**not reproduced** (σ* = 0.4" in first[5]  # and its clean gap falls
    assert "p Holm" in first[4] and "no rise ≥ 0.005: p Holm" in first[5]


def test_holm_adjusted_verdicts_intervals_and_the_no_rise_test_sit_beside_the_rule():
    runs = make_runs()
    infs = A.inference(runs, A.experiments(runs)[0])
    text = fixture_report()
    assert "### Beside the rule" in text
    assert "The rule runs 6 tests in this profile" in text  # 2 quantities × 2 L: U (2), fall (1)
    row = next(
        line
        for line in text.splitlines()
        if line.startswith("| 100 | generalization error (paper) | 0.2 | [0.2, 0.2] |")
    )
    inf = next(i for i in infs if i.L == 100 and i.quantity == "gen_error")
    assert f"| {pval(inf.p_vs_min_holm)} | {pval(inf.p_vs_max_holm)} | **reproduced** |" in row
    rise = next(
        line for line in text.splitlines() if line.startswith("| 200 | clean gap |") and "→" in line
    )
    assert "0→0.4:" in rise and "0.2→0.4:" in rise and "**no rise ≥ 0.005**" in rise
    assert "margin ε = 0.005 in error" in text


def test_the_history_of_the_rule_is_set_against_the_training_times():
    text = fixture_report()  # the fixture's cells finished 2026-12-02 08:10 to 08:14
    assert (
        "- The rule above (VERDICT_RULE) was first committed in `7ce6752` at 2026-12-02 07:59 "
        "UTC, before this profile's first cell finished (2026-12-02 08:10)."
    ) in text
    assert "`dab92fc` at 2026-12-02 09:38 UTC, after all of this profile's cells" in text
    assert "were added after the results of all four profiles" in text


def test_what_delta_does_not_cover_and_the_alpha_limit():
    text = fixture_report()
    section = text[text.index("## What δ does not cover") :]
    for cue in ("λ_min is the sample's", "read off the trained model", "separate evaluation draw"):
        assert cue in section
    assert "`eval_noise`" in section and "(that needs δ/" in section
    row = next(line for line in section.splitlines() if line.startswith("| 100 | 0.2 |"))
    assert row.endswith("| 1.0500 |")  # 1 + the fixture's confidence term 0.05
    assert "| 2.0e+00 |" in row  # the grid's largest α


def test_kendall_table_gives_holm_adjusted_p_and_psi():
    text = fixture_report()
    row = next(line for line in text.splitlines() if line.startswith("| noise_term |"))
    assert "Holm " in row and row.count("(p ") == 3
    assert "Ψ (per axis)" in text and row.endswith("(σ +0.07) |")  # no τ across L: constant


def test_provenance_lists_every_results_file_including_kendall_tau():
    runs = make_runs()
    bounds = make_bounds(runs)
    kendall = with_metadata(
        schemas.to_table(A.kendall_rows(bounds, runs), schemas.KENDALL), {"stage": "figures"}
    )
    text = render(Inputs(runs=runs, spectrum=make_spectrum(), bounds=bounds, kendall=kendall))
    assert f"| results/kendall_tau.parquet | {kendall.num_rows} |" in text


def test_a_profile_of_one_L_says_why_figure_2_is_missing():
    runs = make_runs(lengths=(100,))
    text = render(
        Inputs(
            runs=runs,
            spectrum=make_spectrum((100,)),
            bounds=make_bounds(runs),
            figures=("fig1_gen_error_L100.png",),
        )
    )
    assert "**Figure 2** (L = 200 and 300) is not drawn: this profile trained L = 100 only." in text
    assert "Figure 2** (L = 200" not in fixture_report()


def test_verdicts_and_taus_from_two_commits_say_so_and_one_origin_says_nothing():
    import pyarrow as pa

    assert "Mixed origins" not in fixture_report()
    runs = make_runs()
    half = runs.num_rows // 2
    commits = ["a" * 40] * half + ["b" * 40] * (runs.num_rows - half)
    i = runs.schema.get_field_index("git_commit")
    runs = runs.set_column(i, runs.schema.field(i), pa.array(commits, pa.string()))
    machine = runs.column("hardware")[0].as_py()
    text = render(Inputs(runs=runs, spectrum=make_spectrum(), bounds=make_bounds(runs)))
    verdicts = text.index("**Mixed origins:** The runs behind these verdicts pool rows from 2")
    assert text.index("## Did it reproduce?") < verdicts < text.index("### History of the rule")
    assert f"{half} from {machine} @ aaaaaaaaaa" in text
    taus = text.index("**Mixed origins:** The runs behind these τ")
    assert taus > text.index("| quantity | τ, all")
    assert "The bounds behind these τ" not in text  # the bounds rows share one origin
