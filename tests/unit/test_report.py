"""``rnngen.report``: REPORT.md from hand-made result tables."""

from __future__ import annotations

from rnngen import analysis as A
from rnngen.report import Inputs, render
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
    rule = text.index("The rule, fixed before the numbers")
    table = text.index("| L | quantity | σ* |")
    assert rule < table
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| 100 | generalization") or line.startswith("| 200 | clean gap")
    ]
    assert "**reproduced**" in rows[0]  # the fixture's gen_error is a U
    assert "**not reproduced**" in rows[1]  # its clean gap falls monotonically
    assert "- U-shape in the paper's generalization error: L = 100: **reproduced**" in text


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
    assert lines[0].startswith("| profile | L | σ | seeds | generalization error (paper) |")
    rows = [line for line in lines[2:] if line.startswith("| `")]
    Ls = sorted({v.L for v in A.verdicts(runs, A.experiments(runs)[0])})
    assert len(rows) == 2 * len(Ls)
    first = rows[0].split(" | ")
    assert first[0] == "| `one`" and first[1] == str(Ls[0])
    assert "**reproduced**" in first[4]  # the fixture's gen_error is a U at L = 100
    assert "**not reproduced**" in first[5]  # and its clean gap falls
