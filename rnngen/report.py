"""REPORT.md of a study folder: the paper's claims beside ours, with the verdicts.

:func:`render` turns the Parquet result tables into Markdown and nothing else: the same
tables always give the same text, so a committed report can be checked against its data.
The numbers come from rnngen.analysis; this module only lays them out.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from rnngen import analysis as A
from rnngen.io import table_metadata

# The paper's λ_min(E xxᵀ) on all training data (its text and Appendix D).
PAPER_LAMBDA_MIN = A.PAPER_LAMBDA_MIN
PAPER_CLAIM = (
    "Tu, He & Tao (ICLR 2020) train ReLU RNNs on IMDB with Gaussian noise of standard "
    "deviation σ added to every input coordinate, and report (Figures 1 and 2, mean ± s.e. "
    "over 5 runs) that the generalization error first falls, then rises as σ grows from 0 to "
    "0.4, at L = 100, 200 and 300: a U, which they read as the trade-off in their Theorem 3 "
    "between sqrt(1/(λ_min + σ²)) and the noise term."
)
CAVEAT = (
    "The paper's generalization error is the clean test error minus the training error "
    "measured **on noisy inputs** (the same σ). The noisy training error rises with σ by "
    "itself, so that quantity falls as σ grows even when nothing about generalization "
    "changes. The clean gap (clean test error minus clean training error) is given beside "
    "it, with its own verdict."
)
TERM_HEADERS = {
    "margin_loss": "margin loss",
    "rademacher_fs_term": "fs term",
    "rademacher_norm1_term": "1-norm term",
    "noise_term": "noise term",
    "confidence_term": "confidence",
    "bound_thm3": "Thm 3",
    "bound_thm2": "Thm 2",
    "bound_thm2_remark6": "Thm 2 (Rem. 6)",
    "zhang_order": "Zhang et al.",
}
FIGURES = (
    ("fig1_gen_error_L100.png", "Figure 1: generalization error vs σ at L = 100"),
    ("fig2_gen_error_L200_L300.png", "Figure 2: generalization error vs σ at L = 200 and 300"),
    ("gen_error.png", "Generalization error vs σ"),
    ("clean_gap.png", "Clean gap vs σ"),
    ("history.png", "Training curves: clean training and test accuracy per epoch"),
    ("spectrum.png", "λ_min(E xxᵀ) vs L and the low spectrum"),
    ("bound_terms.png", "Bound terms vs σ"),
    ("bound_vs_gap.png", "Bounds vs measured generalization error"),
    ("measure_ranking.png", "Which measure tracks generalization: τ and Ψ per measure"),
    ("certificates.png", "Certified vs measured test error, with Theorem 3"),
)


@dataclass(frozen=True)
class Inputs:
    """The tables a report is made of (None: that stage has not written its file)."""

    runs: pa.Table | None  # None: a folder of certificates only
    spectrum: pa.Table | None = None
    bounds: pa.Table | None = None
    history: pa.Table | None = None
    embed: pa.Table | None = None
    figures: tuple[str, ...] = ()  # names of the PNG files present under figures/
    # the paper profile's runs (a sibling folder `paper/`), to set another profile beside
    baseline: pa.Table | None = None
    kendall: pa.Table | None = None  # results/kendall_tau.parquet (for its provenance)
    measures: pa.Table | None = None  # results/measures.parquet
    ranking: pa.Table | None = None  # results/measure_ranking.parquet
    certificates: pa.Table | None = None  # results/certificates.parquet


# --------------------------------------------------------------------------- formatting


def num(x: float | None, digits: int = 3) -> str:
    """A number in scientific notation with `digits` significant digits; '—' if missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{digits - 1}e}"


def fixed(x: float | None, places: int = 3, sign: bool = False) -> str:
    if x is None or math.isnan(x):
        return "—"
    return f"{x:+.{places}f}" if sign else f"{x:.{places}f}"


def pm(cell: A.Cell | None, places: int = 3, sign: bool = True) -> str:
    """'+0.034 ± 0.004' (mean ± s.e.; '± —' for a single seed)."""
    if cell is None or not cell.n:
        return "—"
    return f"{fixed(cell.mean, places, sign)} ± {fixed(cell.sem, places)}"


def pval(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def pct(x: float) -> str:
    """0.953 -> '95 %'."""
    return f"{100 * x:.0f} %"


def sig(sigma: float) -> str:
    return f"{sigma:g}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


# --------------------------------------------------------------------------- sections


def _grid_sentence(runs: pa.Table) -> str:
    L = sorted({int(v) for v in A.column(runs, "L")})
    sigmas = sorted({A.sigma_key(v) for v in A.column(runs, "sigma")})
    seeds = sorted({int(v) for v in A.column(runs, "seed")})
    status = Counter(A.strings(runs, "status"))
    counts = ", ".join(f"{status.get(s, 0)} {s}" for s in ("done", "diverged", "failed"))
    return (
        f"L ∈ {{{', '.join(map(str, L))}}} × σ ∈ {{{', '.join(map(sig, sigmas))}}} × "
        f"seeds {{{', '.join(map(str, seeds))}}}: {runs.num_rows} runs ({counts})"
    )


def _settings_sentence(runs: pa.Table, eid: str) -> str:
    s = A.experiment_settings(runs, eid)
    clip = (
        "no clipping"
        if s["clip_grad_norm"] is None
        else f"gradient norm clipped at {s['clip_grad_norm']:g}"
    )
    project = (
        ""
        if s["w_row_sum_max"] is None
        else f"; after every step each row of W is "
        f"scaled to an absolute sum ≤ {s['w_row_sum_max']:g} (β_W ≤ "
        f"{s['w_row_sum_max']:g})"
    )
    # None: the whole split (25,000 reviews each)
    train, test = (f"{n:,}" if n is not None else "all 25,000" for n in (s["n_train"], s["n_test"]))
    reviews = f"{train} training / {test} test reviews"
    if s["n_train"] is None and s["n_test"] is None:
        reviews = "all 25,000 training / 25,000 test reviews"
    spec = json.loads(A.of_experiment(runs, eid).column("spec_json")[0].as_py())
    stop = spec.get("stop_train_accuracy")
    epochs = f"{s['epochs']} epochs" + (
        ""
        if stop is None
        else f" at most (stopped once the clean training accuracy reached {stop:g})"
    )
    return (
        f"hidden size {s['hidden']}, {s['init']} initialization, {s['optimizer']} "
        f"(lr {s['lr']:g}, weight decay {s['weight_decay']:g}), batch {s['batch_size']}, "
        f"{clip}, {epochs}, {reviews}{project}"
    )


def _verdict_rows(verdicts: list[A.Verdict], cells: dict[tuple, A.Cell]) -> list[list[str]]:
    names = {"gen_error": "generalization error (paper)", "clean_gap": "clean gap"}
    rows = []
    for v in sorted(verdicts, key=lambda v: (v.L, v.quantity != "gen_error")):
        star = cells.get((v.quantity, v.L, v.sigma_star))
        rows.append(
            [
                str(v.L),
                names.get(v.quantity, v.quantity),
                sig(v.sigma_star),
                pm(star),
                pval(v.p_vs_min),
                pval(v.p_vs_max),
                str(v.pairs),
                f"**{v.verdict}**",
                v.reason,
            ]
        )
    return rows


QUANTITY_NAMES = {"gen_error": "generalization error (paper)", "clean_gap": "clean gap"}


def verdict_section(inputs: Inputs, eid: str) -> list[str]:
    verdicts = A.verdicts(inputs.runs, eid)
    cells = {
        (q, c.L, c.sigma): c
        for q in ("gen_error", "clean_gap")
        for c in A.cells(inputs.runs, q)
        if c.experiment_id == eid
    }
    out = [
        "## Did it reproduce?",
        "",
        "The rule (when it was written, against when this profile trained, is under *History "
        "of the rule* below):",
        "",
        A.VERDICT_RULE,
        "",
        CAVEAT,
        "",
    ]
    if not verdicts:
        return out + ["No verdict: the experiment has fewer than two σ at every L.", ""]
    out += table(
        [
            "L",
            "quantity",
            "σ*",
            "mean at σ* ± s.e.",
            "p (σ* < σ_min)",
            "p (σ* < σ_max)",
            "seeds paired",
            "verdict",
            "why",
        ],
        _verdict_rows(verdicts, cells),
    )
    out += [""] + inference_lines(A.inference(inputs.runs, eid))
    out += _rise_lines(inputs, eid) + [""]
    out += mixing_note(A.of_experiment(inputs.runs, eid), "The runs behind these verdicts")
    return out + rule_history(inputs.runs, eid)


def _interval(inf: A.Inference) -> str:
    """'[0.3, 0.4]': the σ* bootstrap interval."""
    lo, hi = inf.interval.low, inf.interval.high
    return "—" if math.isnan(lo) else f"[{sig(lo)}, {sig(hi)}]"


def _ends_share(inf: A.Inference) -> str:
    """Share of the resamples with σ* at σ_min / inside / at σ_max."""
    share, v = inf.interval.share, inf.verdict
    if not share:
        return "—"
    low, high = share.get(v.sigma_min, 0.0), share.get(v.sigma_max, 0.0)
    inside = 1.0 - low - high
    return " / ".join(pct(x) for x in (low, max(inside, 0.0), high))


def inference_lines(infs: list[A.Inference]) -> list[str]:
    """The Holm-adjusted verdicts, σ*'s bootstrap intervals and the no-rise tests."""
    if not infs:
        return []
    n_tests = sum(math.isfinite(p) for i in infs for p in (i.verdict.p_vs_min, i.verdict.p_vs_max))
    seeds = sorted({i.interval.seeds for i in infs})
    resamples = sorted({i.interval.resamples for i in infs})
    exact = all(i.interval.exact for i in infs)
    margin = infs[0].no_rise.margin
    tail = 100 * (1 - A.BOOTSTRAP_LEVEL) / 2
    out = [
        "### Beside the rule: multiplicity, the uncertainty of σ*, and no rise as a finding",
        "",
        "Added after every profile's results had been seen, so they are not part of the rule; "
        "they qualify it.",
        "",
        f"- **Holm–Bonferroni.** The rule runs {n_tests} tests in this profile (both "
        "quantities at every L; against both ends when σ* is interior). Holm's step-down "
        "adjustment over these "
        f"{n_tests} keeps the chance of any false rejection among them ≤ {A.SIGNIFICANCE}; "
        "the rule is then applied to the adjusted p-values.",
        f"- **σ*'s {pct(A.BOOTSTRAP_LEVEL)} interval** (paired bootstrap over seeds): the "
        "seeds are resampled with replacement, the same resampled seeds at every σ, and σ* "
        f"is found again in each resample; the interval runs from the {tail:g} % to the "
        f"{100 - tail:g} % quantile of those σ*, on the σ grid. With "
        + "/".join(map(str, seeds))
        + " seeds, "
        + (
            f"all {'/'.join(map(str, resamples))} ordered resamples are enumerated (exact, "
            "no random draw)"
            if exact
            else f"{'/'.join(map(str, resamples))} resamples are drawn from a fixed seed"
        )
        + "; "
        + " and ".join(f"{k} seeds give only {math.comb(2 * k - 1, k)}" for k in seeds)
        + " distinct resamples (as multisets), so the interval is coarse.",
        "",
    ]
    out += table(
        [
            "L",
            "quantity",
            "σ*",
            f"σ* {pct(A.BOOTSTRAP_LEVEL)} interval",
            "resamples: σ* at σ_min / inside / at σ_max",
            "p Holm (σ* < σ_min)",
            "p Holm (σ* < σ_max)",
            "verdict, Holm-adjusted",
        ],
        [
            [
                str(i.L),
                QUANTITY_NAMES.get(i.quantity, i.quantity),
                sig(i.verdict.sigma_star),
                _interval(i),
                _ends_share(i),
                pval(i.p_vs_min_holm),
                pval(i.p_vs_max_holm),
                f"**{i.holm_verdict}**"
                + ("" if i.holm_verdict == i.verdict.verdict else f" (raw: {i.verdict.verdict})"),
            ]
            for i in sorted(infs, key=lambda i: (i.L, i.quantity != "gen_error"))
        ],
    )
    out += [
        "",
        f"**No rise, as a finding** (equivalence margin ε = {margin:g} in error, i.e. "
        f"{100 * margin:g} percentage points). A U needs the quantity to rise past its "
        "minimum. When σ* < σ_max, every σ above σ* is compared with σ*; when σ* = σ_max, "
        "σ_max is compared with every smaller σ (a rise into σ_max from a minimum anywhere "
        "below). Each comparison is a TOST (two one-sided paired t-tests) on the per-seed "
        "differences d = value(larger σ) − value(smaller σ): p↑ tests H0: d ≥ ε (a rise of "
        "ε or more), p↓ tests H0: d ≤ −ε. **No rise** of ε or more is shown when p↑ < "
        f"{A.SIGNIFICANCE} in every comparison: an intersection–union test, whose p is the "
        "largest p↑ (no correction is needed inside it); Holm then adjusts these p over "
        f"this profile's {len(infs)} rows. TOST's equivalence, flat within ±ε (p↑ and p↓ "
        f"both < {A.SIGNIFICANCE}), is given beside it: a steady fall is not flat, and is "
        "not a rise either.",
        "",
    ]
    out += table(
        [
            "L",
            "quantity",
            "comparisons: σ pair, mean d, p↑, p↓",
            "no rise ≥ ε: p",
            "p Holm",
            "flat within ±ε: p (TOST)",
            "finding",
        ],
        [
            [
                str(i.L),
                QUANTITY_NAMES.get(i.quantity, i.quantity),
                "; ".join(
                    f"{sig(c.sigma_lo)}→{sig(c.sigma_hi)}: {c.mean_diff:+.3f}, "
                    f"{pval(c.p_upper)}, {pval(c.p_lower)}"
                    for c in i.no_rise.comparisons
                )
                or "—",
                pval(i.no_rise.p),
                pval(i.no_rise_p_holm),
                pval(i.no_rise.p_tost),
                _no_rise_finding(i),
            ]
            for i in sorted(infs, key=lambda i: (i.L, i.quantity != "gen_error"))
        ],
    )
    return out + [""]


def _no_rise_finding(inf: A.Inference) -> str:
    margin = f"{inf.no_rise.margin:g}"
    if math.isnan(inf.no_rise_p_holm):
        return "no test"
    if inf.no_rise_p_holm < A.SIGNIFICANCE:
        flat = (
            "; flat within ±" + margin
            if math.isfinite(inf.no_rise.p_tost) and inf.no_rise.p_tost < A.SIGNIFICANCE
            else ""
        )
        return f"**no rise ≥ {margin}**{flat}"
    return f"a rise ≥ {margin} not excluded"


def rule_history(runs: pa.Table, eid: str) -> list[str]:
    """When the rule and the rise-onset test were written (A.RULE_HISTORY, from git), set
    against when this experiment's cells finished (the runs' `finished_at`)."""
    finished = sorted(
        _parse(f)
        for f, e in zip(
            runs.column("finished_at").to_pylist(), A.strings(runs, "experiment_id"), strict=True
        )
        if f and e == eid
    )
    out = ["### History of the rule", ""]
    for what, commit, when in A.RULE_HISTORY:
        at = _parse(when)
        line = (
            f"- {what[0].upper()}{what[1:]} was first committed in `{commit}` at {_clock(at)} UTC"
        )
        if finished:
            first, last = finished[0], finished[-1]
            if at < first:
                line += f", before this profile's first cell finished ({_clock(first)})."
            elif at < last:
                line += (
                    f", after this profile's first cell had finished ({_clock(first)}) and "
                    f"while its other cells were training (the last finished at {_clock(last)})."
                )
            else:
                line += f", after all of this profile's cells had finished ({_clock(last)})."
        else:
            line += "."
        out.append(line)
    out += [
        "- The Holm adjustment, the bootstrap interval of σ* and the no-rise test were added "
        "after the results of all four profiles (paper, paper-long, sigma-wide, constrained) "
        "had been seen and reported.",
        "",
    ]
    return out


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _rise_lines(inputs: Inputs, eid: str) -> list[str]:
    """Per L and quantity: the first σ above σ* where the quantity is significantly higher
    (one-sided paired t-test, p < 0.05), i.e. where a rise begins, if anywhere."""
    names = {"gen_error": "generalization error (paper)", "clean_gap": "clean gap"}
    lines = []
    for q, name in names.items():
        mine = [c for c in A.cells(inputs.runs, q) if c.experiment_id == eid]
        for L in sorted({c.L for c in mine}):
            onset = A.rise_onset([c for c in mine if c.L == L])
            lines.append(
                f"- L = {L}, {name}: "
                + (
                    f"rises above its minimum from σ = {sig(onset[0])} (p {pval(onset[1])})"
                    if onset
                    else "no σ above σ* is significantly higher"
                )
            )
    return (
        [
            "Where a rise begins (the first σ above σ* whose value is higher, one-sided "
            "paired t-test, p < 0.05):",
            "",
            *lines,
        ]
        if lines
        else []
    )


def lambda_section(spectrum: pa.Table | None) -> list[str]:
    out = ["## λ_min(E xxᵀ)", ""]
    if spectrum is None or spectrum.num_rows == 0:
        return out + ["No spectrum on disk (`rnngen spectrum`).", ""]
    out += [
        "The uncentred second moment of the training sequences x ∈ R^{50L}, in float64 "
        "over all n training reviews; λ_min by shift-invert block Lanczos on its "
        "Cholesky factor, certified by the residual ‖Σv − λv‖ computed without Σ. The "
        "paper's values are from its text and Appendix D (its tokenization is not "
        "given, so the same order of magnitude is what to expect).",
        "",
    ]
    rows = []
    for r in sorted(spectrum.to_pylist(), key=lambda r: (r["L"], r["n"])):
        lam, paper = r["lambda_min"], PAPER_LAMBDA_MIN.get(r["L"])
        ratio = lam / paper if lam is not None and paper else None
        rows.append(
            [
                str(r["L"]),
                str(r["n"]),
                num(lam, 4)
                if lam is not None
                else f"uncertified ({num(r['lambda_min_estimate'])})",
                num(r["lambda_min_residual"], 2),
                num(paper, 2),
                fixed(ratio, 2) if ratio is not None else "—",
                num(r["lambda_max"], 4),
                num(r["condition"], 2),
                r["status"],
            ]
        )
    return (
        out
        + table(
            [
                "L",
                "n",
                "λ_min (ours)",
                "residual ‖Σv−λv‖",
                "λ_min (paper)",
                "ours / paper",
                "λ_max",
                "condition",
                "status",
            ],
            rows,
        )
        + [""]
    )


def _scale(embed: pa.Table | None) -> float | None:
    """The pooled std of the GloVe coordinates of the training tokens, if recorded."""
    if embed is None or "coord_std_tokens" not in embed.column_names or not embed.num_rows:
        return None
    value = embed.column("coord_std_tokens")[0].as_py()
    return float(value) if value is not None else None


def cells_section(inputs: Inputs, eid: str) -> list[str]:
    by = {
        q: {(c.L, c.sigma): c for c in A.cells(inputs.runs, q) if c.experiment_id == eid}
        for q in ("test_accuracy", "train_error_noisy", "gen_error", "clean_gap")
    }
    std = _scale(inputs.embed)
    out = [
        "## Accuracy and generalization error per (L, σ)",
        "",
        "Mean ± standard error over seeds (n = seeds with a finished run). Errors are "
        "fractions in [0, 1].",
    ]
    if std is not None:
        out += [
            "",
            f"σ / std: σ relative to the standard deviation of the GloVe coordinates "
            f"of the training tokens, {std:.4f} (pooled over tokens and coordinates), for "
            "comparison with inputs scaled otherwise.",
        ]
    out.append("")
    header = [
        "L",
        "σ",
        *(["σ / std"] if std else []),
        "n",
        "clean test accuracy",
        "noisy train error",
        "generalization error (paper)",
        "clean gap",
    ]
    rows = []
    for (L, s), acc in sorted(by["test_accuracy"].items()):
        rows.append(
            [
                str(L),
                sig(s),
                *([f"{s / std:.2f}"] if std else []),
                str(acc.n),
                pm(acc, sign=False),
                pm(by["train_error_noisy"].get((L, s)), sign=False),
                pm(by["gen_error"].get((L, s))),
                pm(by["clean_gap"].get((L, s))),
            ]
        )
    return out + table(header, rows) + [""]


def history_section(inputs: Inputs, eid: str) -> list[str]:
    if inputs.history is None or inputs.history.num_rows == 0:
        return []
    ids = {
        r
        for r, e in zip(
            A.strings(inputs.runs, "run_id"), A.strings(inputs.runs, "experiment_id"), strict=True
        )
        if e == eid
    }
    rows = [h for h in inputs.history.to_pylist() if h["run_id"] in ids]
    if not rows:
        return []
    last: dict[str, dict] = {}
    best: dict[str, dict] = {}
    for h in rows:
        if h["epoch"] > last.get(h["run_id"], {"epoch": 0})["epoch"]:
            last[h["run_id"]] = h
        if h["test_accuracy"] > best.get(h["run_id"], {"test_accuracy": -1})["test_accuracy"]:
            best[h["run_id"]] = h
    groups: dict[tuple[int, float], list[str]] = {}
    for rid, h in last.items():
        groups.setdefault((h["L"], A.sigma_key(h["sigma"])), []).append(rid)
    table_rows = []
    for (L, s), rids in sorted(groups.items()):
        train = np.mean([last[r]["train_accuracy_clean"] for r in rids])
        test = np.mean([last[r]["test_accuracy"] for r in rids])
        peak = np.mean([best[r]["test_accuracy"] for r in rids])
        at = np.mean([best[r]["epoch"] for r in rids])
        table_rows.append(
            [str(L), sig(s), str(len(rids)), fixed(train), fixed(test), fixed(peak), f"{at:.1f}"]
        )
    eval_rows = rows[0]["eval_rows"]
    return (
        [
            "## Training: did the models fit?",
            "",
            f"From results/history.parquet: accuracies after each epoch on fixed, "
            f"class-balanced subsets of {eval_rows} training and {eval_rows} test reviews "
            "(clean inputs), mean over seeds. A model that fits its training data shows a "
            "clean training accuracy near 1 at the last epoch.",
            "",
        ]
        + table(
            [
                "L",
                "σ",
                "runs",
                "train acc (last epoch)",
                "test acc (last epoch)",
                "best test acc",
                "at epoch (mean)",
            ],
            table_rows,
        )
        + [""]
    )


def _kendall_table(inputs: Inputs, eid: str) -> list[str]:
    """τ (raw two-sided p, Holm-adjusted p over this table, models) per quantity and scope,
    and the granulated τ Ψ per quantity."""
    every = A.kendall_rows(inputs.bounds, inputs.runs)
    adjusted = A.kendall_holm(every)
    rows = [(r, p) for r, p in zip(every, adjusted, strict=True) if r["experiment_id"] == eid]
    scopes = list(dict.fromkeys(r["scope"] for r, _ in rows))
    cell = {(r["quantity"], r["scope"]): (r, p) for r, p in rows}
    data = A.joined(inputs.bounds, inputs.runs)
    mine = data["experiment_id"] == eid
    body = []
    for q in A.KENDALL_QUANTITIES:
        entries = []
        for scope in scopes:
            r, p = cell[(q, scope)]
            entries.append(
                "—"
                if math.isnan(r["tau"])
                else f"{r['tau']:+.2f} (p {pval(r['p_value'])}, Holm {pval(p)}, n {r['n_models']})"
            )
        g = A.granulated_kendall(data, mine, q)
        psi = "—" if math.isnan(g.psi) else f"{g.psi:+.2f}"
        axes = ", ".join(
            f"{'σ' if a == 'sigma' else a} {t:+.2f}"
            for a, t in g.per_axis.items()
            if math.isfinite(t)
        )
        body.append([q, *entries, f"{psi} ({axes})" if axes else psi])
    return table(["quantity", *[f"τ, {s}" for s in scopes], "Ψ (per axis)"], body)


def _kendall_family(inputs: Inputs, eid: str) -> int:
    rows = A.kendall_rows(inputs.bounds, inputs.runs)
    return sum(r["experiment_id"] == eid and math.isfinite(r["p_value"]) for r in rows)


def bound_facts(bounds: pa.Table, eid: str) -> list[str]:
    """Plain sentences on the best-α rows of one experiment: how many bounds are vacuous
    (above 1, the largest possible error) and how many models' best α is the grid's
    largest, where the margin loss has saturated and the minimum is the grid's edge."""
    best = A.of_experiment(A.best_rows(bounds), eid)
    thm3 = A.column(best, "bound_thm3")
    finite = thm3[np.isfinite(thm3) & (thm3 > 0)]
    if not finite.size:
        return []
    vacuous = int((finite > 1).sum())
    lines = [
        f"Theorem 3's bound exceeds 1 (vacuous: an error is at most 1) for {vacuous} of "
        f"{best.num_rows} models; log₁₀ of the bound ranges from "
        f"{np.log10(finite.min()):.1f} to {np.log10(finite.max()):.1f}."
    ]
    rows = A.of_experiment(bounds, eid)
    top: dict[str, float] = {}
    for rid, alpha in zip(A.strings(rows, "run_id"), A.column(rows, "alpha"), strict=True):
        top[rid] = max(top.get(rid, -math.inf), alpha)
    at_edge = sum(
        1
        for rid, alpha in zip(A.strings(best, "run_id"), A.column(best, "alpha"), strict=True)
        if alpha == top[rid]
    )
    if at_edge:
        lines.append(
            f"For {at_edge} of {best.num_rows} models the best α is the largest of the grid: "
            "there the margin loss is close to 1 (the margins are small next to α) and the "
            "bound still falls as α grows, so the minimum is the grid's edge, not a balance "
            "of the terms."
        )
    missing = _without_bounds(rows)
    if missing:
        lines.append(
            "Left out of every bound statistic here: "
            + "; ".join(f"{n} model(s) {status}" for status, n in sorted(missing.items()))
            + " (each row's `reason` names the cause)."
        )
    return [" ".join(lines), ""]


def _without_bounds(rows: pa.Table) -> dict[str, int]:
    """Models whose bound rows are not 'ok' (non_finite, skipped, failed), by status."""
    status: dict[str, str] = {}
    for rid, st in zip(A.strings(rows, "run_id"), A.strings(rows, "status"), strict=True):
        if st != "ok" or rid not in status:
            status[rid] = st
    counts: dict[str, int] = {}
    for st in status.values():
        if st != "ok":
            counts[st] = counts.get(st, 0) + 1
    return counts


def bounds_section(inputs: Inputs, eid: str) -> list[str]:
    out = ["## The bounds", ""]
    if inputs.bounds is None or not A.best_rows(inputs.bounds).num_rows:
        return out + ["No bounds on disk (`rnngen bounds`).", ""]
    best = A.of_experiment(A.best_rows(inputs.bounds), eid)
    rules = sorted(set(A.strings(best, "alpha_rule")))
    deltas = sorted({float(d) for d in A.column(best, "delta_total")})
    out += [
        f"Every model's bounds are evaluated at each α of the rule: {'; '.join(rules)}. "
        f"Confidence δ = {', '.join(f'{d:g}' for d in deltas)} in all, δ/|grid| per α. "
        "Each term below is the geometric mean over seeds of the models' values at their "
        "best α (a bound's terms span many orders of magnitude; an arithmetic mean would "
        "be the largest seed's). The terms are Theorem 3's (noisy inputs, ramp loss); "
        "'Thm 2' is Theorem 2's total on clean inputs, 'Rem. 6' with the data-free r of "
        "Remark 6 (defined only for β_W < 1).",
        "",
    ]
    out += bound_facts(inputs.bounds, eid)
    terms = [t for t in A.term_cells(inputs.bounds) if t.experiment_id == eid]
    header = ["L", "σ", "n", "best α", *TERM_HEADERS.values(), "dominant term (× 10^k)"]
    rows = []
    for t in terms:
        name, orders = t.dominant()
        rows.append(
            [
                str(t.L),
                sig(t.sigma),
                str(t.n),
                num(t.means["alpha"], 2),
                *(num(t.means[q], 2) for q in TERM_HEADERS),
                f"{TERM_HEADERS[name]} (k = {fixed(orders, 1)})",
            ]
        )
    out += table(header, rows) + [""]
    out += (
        ["Norms (geometric means over seeds): β = ‖·ᵀ‖₁, the largest absolute row sum.", ""]
        + table(
            ["L", "σ", "β_U", "β_V", "β_W", "β_W^L", "Λ", "r_fs", "r_fr"],
            [
                [
                    str(t.L),
                    sig(t.sigma),
                    *(
                        num(t.means[q], 3)
                        for q in (
                            "beta_U",
                            "beta_V",
                            "beta_W",
                            "beta_W_pow_L",
                            "Lambda",
                            "r_fs",
                            "r_fr",
                        )
                    ),
                ]
                for t in terms
            ],
        )
        + [""]
    )
    out += (
        [
            "Kendall's τ between each bound or term (at each model's best α) and the measured "
            "generalization error, over all models and within each L. A bound that tracks "
            "generalization has τ > 0. p is the two-sided p of each τ; Holm adjusts it over "
            f"every τ of this table ({_kendall_family(inputs, eid)} tests), since a table of "
            "this size finds some p < 0.05 by chance. Ψ is the granulated τ of Jiang et al. "
            "(2020): for each axis (L, σ), the mean τ over the groups of models that differ "
            "in that axis alone (same seed, same value of the other axis), then the mean over "
            "the axes that vary; it does not reward a quantity that merely moves with L.",
            "",
        ]
        + _kendall_table(inputs, eid)
        + [""]
        + mixing_note(A.of_experiment(inputs.runs, eid), "The runs behind these τ")
        + mixing_note(A.of_experiment(inputs.bounds, eid), "The bounds behind these τ")
    )
    return out


def delta_section(inputs: Inputs, eid: str) -> list[str]:
    """What the bounds' probability 1 − δ does not cover, and Theorem 3 as α → ∞ beside
    its value at the edge of the α grid."""
    if inputs.bounds is None or not A.best_rows(inputs.bounds).num_rows:
        return []
    best = A.of_experiment(A.best_rows(inputs.bounds), eid)
    n_models = best.num_rows
    out = [
        "## What δ does not cover",
        "",
        "Each bound holds with probability ≥ 1 − δ over the n training samples and their "
        "noise, for an α of the grid and a class of networks fixed before the data is seen. "
        "Outside that δ:",
        "",
        "- **λ_min is the sample's.** The theorems use λ_min(E xxᵀ) of the data "
        "distribution; the bounds use λ_min of the second moment of these n training "
        "sequences (certified as an eigenvalue of that matrix, not of E xxᵀ). Its "
        "estimation error is in no δ, and the smallest eigenvalue of a sample second "
        "moment is on average at or below the population's (λ_min is concave, so by "
        "Jensen E λ_min(Σ̂) ≤ λ_min(Σ)): on average that enlarges the fs term, but any one "
        "sample can err either way.",
        "- **The norms are read off the trained model.** β_U, β_V, β_W, Λ and r are "
        "measured on each model after training and put into a bound stated for a class "
        "whose norms are fixed in advance. Choosing the class after seeing the data needs "
        "a union bound over norm levels (δ split over a grid of them), which is not "
        "included.",
        "- **The noise is one separate evaluation draw.** The margin loss, ‖X + X_ε‖_F, "
        "‖Xᵀ + X_εᵀ‖₁ and r on noisy inputs use one N(0, σ²) draw per training example from "
        "the run's own `eval_noise` stream: an evaluation draw, independent of the fresh "
        "noise training drew at every step (none of the training draws is kept); the "
        "bounds table's `noise_draw` column calls it the recorded training draw, which it "
        "is not. Another draw would give other values; only this one is evaluated.",
        f"- **One model at a time.** δ covers each model's bound on its own; the {n_models} "
        f"models here are not covered all at once (that needs δ/{n_models} each).",
        "",
    ]
    edge = {
        (t.L, t.sigma): t for t in A.term_cells(inputs.bounds, at="edge") if t.experiment_id == eid
    }
    if not edge:
        return out
    out += [
        "**Theorem 3 as α → ∞.** As α grows, the ramp loss of every finite margin tends to 1 "
        "and every term divided by α tends to 0, so the bound tends to 1 + its confidence "
        "term: above 1, vacuous, whatever the model. A best α at the grid's largest value "
        "means the bound was still falling toward that limit. Geometric means over seeds:",
        "",
    ]
    rows = [
        [
            str(L),
            sig(s),
            num(t.means["alpha"], 2),
            num(t.means["bound_thm3"], 3),
            fixed(1.0 + t.means["confidence_term"], 4),
        ]
        for (L, s), t in sorted(edge.items())
    ]
    return (
        out
        + table(
            [
                "L",
                "σ",
                "largest α of the grid",
                "Thm 3 at that α",
                "Thm 3 as α → ∞ (1 + confidence)",
            ],
            rows,
        )
        + [""]
    )


def _parse(stamp: str | datetime) -> datetime:
    """A row's finished_at: a timestamp, or ISO text in files written before it was one."""
    if isinstance(stamp, datetime):
        return stamp.replace(tzinfo=None)
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def wall_times(inputs: Inputs) -> list[list[str]]:
    """Rows (stage, summed seconds, first start → last finish) from the tables' columns."""
    rows = []
    if inputs.spectrum is not None and inputs.spectrum.num_rows:
        total = float(np.nansum(A.column(inputs.spectrum, "seconds")))
        rows.append(["spectrum", _duration(total), "—"])
    runs = inputs.runs.to_pylist() if inputs.runs is not None else []
    timed = [r for r in runs if r["finished_at"] and r["seconds"] is not None]
    if timed:
        total = sum(r["seconds"] for r in timed)
        start = min(_parse(r["finished_at"]).timestamp() - r["seconds"] for r in timed)
        end = max(_parse(r["finished_at"]).timestamp() for r in timed)
        rows.append(["training", _duration(total), _duration(end - start)])
    if inputs.bounds is not None and inputs.bounds.num_rows:
        per_model = {
            r["run_id"]: r["seconds"] for r in inputs.bounds.to_pylist() if r["seconds"] is not None
        }
        rows.append(["bounds", _duration(sum(per_model.values())), "—"])
    return rows


def _provenance_rows(tables: dict[str, pa.Table | None]) -> list[list[str]]:
    rows = []
    for name, t in tables.items():
        if t is None:
            continue
        meta = table_metadata(t)
        prov = meta.get("provenance", {})
        commit = prov.get("git_commit")
        rows.append(
            [
                f"results/{name}.parquet",
                str(t.num_rows),
                (commit[:10] if commit else "unknown")
                + (" (uncommitted changes)" if prov.get("git_dirty") else ""),
                prov.get("written_at", "—"),
                str(prov.get("flow_run_id") or "—"),
            ]
        )
    return rows


def provenance_section(inputs: Inputs) -> list[str]:
    meta = table_metadata(inputs.runs)
    prov = meta.get("provenance", {})
    versions = prov.get("versions", {})
    hardware = sorted({h for h in A.strings(inputs.runs, "hardware") if h})
    devices = sorted({d for d in A.strings(inputs.runs, "device") if d})
    keys = sorted({k for k in A.strings(inputs.runs, "data_key") if k})
    out = [
        "## Provenance",
        "",
        f"- Profile: `{meta.get('profile') or 'unknown'}`; grid: {_grid_sentence(inputs.runs)}.",
        f"- Data: IMDB (Maas et al. 2011) 25,000 / 25,000 reviews, GloVe 6B 50-d; "
        f"data_key {', '.join(f'`{k}`' for k in keys)} (the raw data's hash, the "
        "tokenizer and the embedding).",
        f"- Software (training): Python {prov.get('python', '?')}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v)
        + ".",
        f"- Hardware of the training cells: {'; '.join(hardware) or 'unknown'} "
        f"(device {', '.join(devices) or 'unknown'}). The driver ran on: "
        f"{prov.get('cpu', '?')} ({prov.get('cpu_cores', '?')} cores)"
        + (f", GPUs {', '.join(prov['gpus'])}" if prov.get("gpus") else ", no GPU")
        + ".",
        "",
    ]
    times = wall_times(inputs)
    if times:
        out += [
            "Time per stage: the sum over its units of work, and for training the time from "
            "the first cell's start to the last cell's end (cells run in parallel; "
            "interruptions count too).",
            "",
        ]
        out += table(["stage", "summed", "first start → last finish"], times) + [""]
    out += ["Each file records how it was made (Parquet metadata, key `rnngen`):", ""]
    out += table(
        ["file", "rows", "git commit", "written (UTC)", "Prefect flow run"],
        _provenance_rows(
            {
                "runs": inputs.runs,
                "history": inputs.history,
                "spectrum": inputs.spectrum,
                "bounds": inputs.bounds,
                "embed": inputs.embed,
                "kendall_tau": inputs.kendall,
                "measures": inputs.measures,
                "measure_ranking": inputs.ranking,
                "certificates": inputs.certificates,
            }
        ),
    ) + [""]
    return out + origins_section(inputs)


def _origin(row: dict) -> str:
    """'AMD EPYC (2 cores) @ 1a2b3c4d5e' for a row: its machine and the commit it was
    computed at ('commit not recorded per row' for rows written before rows carried it)."""
    machine = row.get("hardware") or row.get("cpu_model") or "machine not recorded"
    commit = row.get("git_commit")
    if not commit:
        return f"{machine} @ commit not recorded per row"
    return f"{machine} @ {commit[:10]}" + (" (uncommitted changes)" if row.get("git_dirty") else "")


def origins(table: pa.Table | None) -> dict[str, int]:
    """How many rows of `table` come from each machine and commit."""
    counts: dict[str, int] = {}
    for row in table.to_pylist() if table is not None else []:
        counts[_origin(row)] = counts.get(_origin(row), 0) + 1
    return counts


def mixing_note(table: pa.Table | None, what: str) -> list[str]:
    """A warning line when the rows of one comparison come from more than one machine or
    commit (empty when they come from one)."""
    found = origins(table)
    if len(found) <= 1:
        return []
    parts = "; ".join(f"{n} from {o}" for o, n in sorted(found.items()))
    return [
        f"**Mixed origins:** {what} pool rows from {len(found)} machines or commits ({parts}). "
        "The same run_id can round differently on another CPU, and code changes between "
        "commits can move results (see `rnngen replay`).",
        "",
    ]


def origins_section(inputs: Inputs) -> list[str]:
    """Which machines and commits produced the rows of each results table."""
    if inputs.runs is None and inputs.certificates is None:
        return []
    tables = {
        "runs": inputs.runs,
        "bounds": inputs.bounds,
        "spectrum": inputs.spectrum,
        "measures": inputs.measures,
        "certificates": inputs.certificates,
    }
    rows = [
        [f"results/{name}.parquet", origin, str(n)]
        for name, t in tables.items()
        for origin, n in sorted(origins(t).items())
    ]
    if not rows:
        return []
    out = ["Which machine and commit produced the rows of each table:", ""]
    return out + table(["file", "machine @ commit", "rows"], rows) + [""]


def measures_section(inputs: Inputs) -> list[str]:
    """## Which measure tracks generalization? The ranking of every measure by granulated τ
    against the clean gap, with the intervals, the verdict and where Theorem 3 stands."""
    if inputs.ranking is None or not inputs.ranking.num_rows:
        return []
    rows = inputs.ranking.to_pylist()
    gap = [r for r in rows if r["target"] == "clean_gap" and r["scope"] == "this folder"]
    gen = {
        r["measure"]: r for r in rows if r["target"] == "gen_error" and r["scope"] == "this folder"
    }
    if not gap:
        return []
    axes = sorted(json.loads(gap[0]["axes"]))
    n_models, n_res = gap[0]["n_models"], gap[0]["n_resamples"]

    def ci(r: dict, name: str) -> str:
        return f"{fixed(r[name], 2, True)} [{fixed(r[name + '_lo'], 2, True)}, " + (
            f"{fixed(r[name + '_hi'], 2, True)}]"
        )

    body = _ranking_body(gap, axes, gen, ci, "reference")
    positive = [r["measure"] for r in gap if r["psi_lo"] is not None and r["psi_lo"] > 0]
    thm3 = next((r for r in gap if r["measure"] == "tu2020_thm3"), None)
    out = [
        "## Which measure tracks generalization?",
        "",
        f"Every measure of every model ({n_models} models with a finite value), ranked as "
        "Jiang et al. (ICLR 2020, “Fantastic generalization measures”) rank them: Kendall τ "
        "against the clean gap over all models rewards anything that moves with one "
        "hyperparameter, so the table is sorted by the granulated τ Ψ, the mean over the "
        f"varied axes ({', '.join(axes)}) of the mean τ within groups of models that differ "
        "in that axis alone (the same seed, every other setting equal). Intervals: 95 % "
        f"bootstrap over models ({n_res} resamples). Rows of `results/measures.parquet` "
        "give each value with its reference; `results/measure_ranking.parquet` this table.",
        "",
    ]
    out += table(
        ["rank", "measure", "Ψ (clean gap)", "τ (clean gap)", *(f"ψ {a}" for a in axes),
         "Ψ (gen. error)", "reference"],
        body,
    ) + [""]  # fmt: skip
    verdict = (
        f"**Verdict.** {len(positive)} of {len(gap)} measures reach Ψ > 0 with the whole "
        "interval above 0"
        + (": " + ", ".join(f"`{m}`" for m in positive) if positive else "")
        + f"; the other {len(gap) - len(positive)} do not."
    )
    if thm3 is not None:
        verdict += (
            f" Theorem 3 of Tu et al. ranks {thm3['rank']} of {len(gap)} (Ψ {ci(thm3, 'psi')})."
        )
    out += [verdict, ""]
    out += _pooled_ranking(rows, ci)
    if inputs.measures is not None and inputs.measures.num_rows:
        mrows = inputs.measures.to_pylist()
        bad = Counter((r["measure"], r["status"]) for r in mrows if r["status"] != "ok")
        cost = [r["cost_forward_passes"] for r in mrows if r.get("cost_forward_passes")]
        flat = [r["flatness_forward_passes"] for r in mrows if r.get("flatness_forward_passes")]
        if cost:
            out += [
                f"Cost per model, in forward passes over its training set (median): "
                f"{float(np.median(cost)):.2f} for every measure but flatness"
                + (f", {float(np.median(flat)):.1f} for flatness." if flat else "."),
                "",
            ]
        if bad:
            out += [
                "Not computed on every model (the reason is in each row): "
                + "; ".join(f"`{m}` {st} × {n}" for (m, st), n in sorted(bad.items()))
                + ".",
                "",
            ]
    out += [
        "The RNN bounds of Zhang et al. (2018) and Chen et al. (2020) are stated up to "
        "constants their available text does not pin down; their rows say how each was "
        "reconstructed. Constants change no ranking, but a different power of L would.",
        "",
    ]
    return out + mixing_note(inputs.measures, "The measures")


def _ranking_body(rows: list[dict], axes: list[str], gen: dict, ci, last: str) -> list[list[str]]:
    """Table rows of a ranking: rank, measure, Ψ and τ with intervals, ψ per axis, Ψ against
    the generalization error (`gen`: measure -> its row), and the column `last`."""
    return [
        [
            str(r["rank"]),
            f"`{r['measure']}`",
            ci(r, "psi"),
            ci(r, "tau"),
            *(fixed(json.loads(r["axes"]).get(a), 2, True) for a in axes),
            fixed(gen[r["measure"]]["psi"], 2, True) if r["measure"] in gen else "—",
            str(r[last]),
        ]
        for r in rows
    ]


def _pooled_ranking(rows: list[dict], ci) -> list[str]:
    """The ranking over this folder's models and those of the folders it was pooled with
    (scope 'pooled: …'), against the clean gap: a table and its verdict."""
    pooled = [r for r in rows if r["target"] == "clean_gap" and r["scope"].startswith("pooled: ")]
    if not pooled:
        return []
    axes = sorted(json.loads(pooled[0]["axes"]))
    gen = {
        r["measure"]: r
        for r in rows
        if r["target"] == "gen_error" and r["scope"] == pooled[0]["scope"]
    }
    folders = pooled[0]["scope"].removeprefix("pooled: ")
    body = _ranking_body(pooled, axes, gen, ci, "n_models")
    positive = [f"`{r['measure']}`" for r in pooled if r["psi_lo"] is not None and r["psi_lo"] > 0]
    thm3 = next((r for r in pooled if r["measure"] == "tu2020_thm3"), None)
    out = [
        f"### Over every model of {folders}",
        "",
        f"The same ranking over the models of these folders together "
        f"({max(r['n_models'] for r in pooled)} models; a run_id trained in two folders counts "
        "once, the first folder's copy). The axes are the settings that vary among them, so "
        "each granulated group still differs in one setting alone.",
        "",
    ]
    out += table(
        ["rank", "measure", "Ψ (clean gap)", "τ (clean gap)", *(f"ψ {a}" for a in axes),
         "Ψ (gen. error)", "models"],
        body,
    ) + [""]  # fmt: skip
    verdict = (
        f"**Pooled verdict.** {len(positive)} of {len(pooled)} measures reach Ψ > 0 with the "
        "whole interval above 0" + (": " + ", ".join(positive) if positive else "") + "."
    )
    if thm3 is not None:
        verdict += f" Theorem 3 ranks {thm3['rank']} of {len(pooled)} (Ψ {ci(thm3, 'psi')})."
    return out + [verdict, ""]


def certificates_section(inputs: Inputs) -> list[str]:
    """## A non-vacuous certificate: each certified cell's PAC-Bayes-kl bound beside the
    measured test errors, and which term dominates."""
    if inputs.certificates is None or not inputs.certificates.num_rows:
        return []
    rows = sorted(inputs.certificates.to_pylist(), key=lambda r: (r["L"], r["sigma"], r["seed"]))
    done = [r for r in rows if r["status"] == "done"]
    body = [
        [
            str(r["L"]),
            sig(r["sigma"]),
            str(r["seed"]),
            fixed(r["certificate"], 4),
            fixed(r["test_error_stochastic"], 4),
            fixed(r["test_error_mean"], 4),
            fixed(r["test_error_prior"], 4),
            fixed(r["emp_error_mc"], 4),
            fixed(r["emp_error_bound"], 4),
            f"{r['kl']:.1f}",
            f"{r['kl_term']:.4f}" if r.get("kl_term") is not None else "—",
            f"{r['prior_var']:.0e}",
            f"{r['n_prior']:,} / {r['n_bound']:,}",
            str(r["m"]),
        ]
        for r in done
    ]
    out = [
        "## A non-vacuous certificate",
        "",
        "PAC-Bayes-kl (Seeger 2002; Maurer 2004) with a data-dependent prior (Dziugaite & "
        "Roy 2017; Pérez-Ortiz et al., JMLR 2021): the training set is split, by a seeded, "
        "class-balanced rule fixed in advance, into a prior part and a disjoint bound part "
        "(no review in both: the row's `n_overlap` is 0). The prior mean is trained on the "
        "prior part with the cell's recipe; the Gaussian posterior N(μ, diag s²) is trained "
        "on the bound part with f_quad; its empirical error on the bound part is estimated "
        "from m sampled networks and bounded by kl⁻¹(ê, ln(2/δ′)/m) (Langford & Caruana "
        "2002); then certificate = kl⁻¹(that, (KL(Q‖P) + ln(2√n/δ))/n), n the bound part's "
        "size, δ split over the prior-variance grid. The certified quantity is the clean "
        "0-1 error of the stochastic classifier; the test set was read only after it was "
        "computed.",
        "",
    ]
    out += table(
        ["L", "σ", "seed", "certificate", "test error (stochastic)", "test error (mean net)",
         "test error (prior net)", "ê (MC)", "kl⁻¹ of ê", "KL(Q‖P)", "(KL + ln(2√n/δ))/n",
         "prior var", "prior / bound", "m"],
        body,
    ) + [""]  # fmt: skip
    if done:
        worst = max(r["certificate"] for r in done)
        below = sum(r["certificate"] < 0.5 for r in done)
        held = sum(r["certificate"] >= r["test_error_stochastic"] for r in done)
        out += [
            f"**Verdict.** {below} of {len(done)} certified cells have a certificate below 0.5 "
            f"(better than chance); the largest is {worst:.4f}. In {held} of {len(done)} the "
            "certificate lies above the measured test error of the stochastic classifier, as "
            "it must with probability ≥ 1 − δ − δ′ (each row's `confidence`).",
            "",
        ]
    failed = [r for r in rows if r["status"] != "done"]
    if failed:
        out += [
            f"Not certified: {len(failed)} cells ("
            + "; ".join(f"σ={sig(r['sigma'])}: {r['status']}, {r['reason']}" for r in failed)
            + ").",
            "",
        ]
    return out + mixing_note(inputs.certificates, "The certificates")


def baseline_section(inputs: Inputs, eid: str) -> list[str]:
    """This experiment beside the paper profile's runs at the same (L, σ), when a `paper/`
    folder sits next to this one: what the profile's change (more epochs, a constrained W,
    ...) did to accuracy and to the two gaps."""
    if inputs.baseline is None or not inputs.baseline.num_rows:
        return []
    base = inputs.baseline
    main = A.experiments(base)[0]
    quantities = ("test_accuracy", "gen_error", "clean_gap")
    ours = {
        q: {(c.L, c.sigma): c for c in A.cells(inputs.runs, q) if c.experiment_id == eid}
        for q in quantities
    }
    theirs = {
        q: {(c.L, c.sigma): c for c in A.cells(base, q) if c.experiment_id == main}
        for q in quantities
    }
    common = sorted(set(ours["test_accuracy"]) & set(theirs["test_accuracy"]))
    if not common or main == eid:
        return []
    rows = [
        [
            str(L),
            sig(s),
            *(
                f"{pm(ours[q][(L, s)], sign=q != 'test_accuracy')} vs "
                f"{pm(theirs[q][(L, s)], sign=q != 'test_accuracy')}"
                for q in quantities
            ),
        ]
        for L, s in common
    ]
    return (
        [
            "## Beside the paper profile",
            "",
            f"The same (L, σ) in the `paper` profile's folder ({A.experiment_label(base, main)}),"
            " mean ± s.e. over its seeds: this profile vs the paper profile.",
            "",
        ]
        + table(
            ["L", "σ", "clean test accuracy", "generalization error (paper)", "clean gap"], rows
        )
        + [""]
    )


def figures_section(figures: tuple[str, ...], lengths: set[int] | None = None) -> list[str]:
    """The drawn figures, linked; with Figure 1 drawn but not Figure 2, a line that says
    why (the paper's Figure 2 is L = 200 and 300, which this grid does not have)."""
    present = [(f, caption) for f, caption in FIGURES if f in figures]
    if not present:
        return []
    out = ["## Figures", ""]
    for f, caption in present:
        out += [f"**{caption}**", "", f"![{caption}](figures/{f})", ""]
        if f == "fig1_gen_error_L100.png" and not (lengths or set()) & {200, 300}:
            have = ", ".join(map(str, sorted(lengths or ())))
            out += [
                "**Figure 2** (L = 200 and 300) is not drawn: this profile trained "
                + (f"L = {have} only." if have else "no L = 200 or 300."),
                "",
            ]
    return out


def other_experiments(runs: pa.Table, main: str) -> list[str]:
    others = [e for e in A.experiments(runs) if e != main]
    if not others:
        return []
    lines = [
        "## Runs not included",
        "",
        "This folder also holds runs of other experiments. They differ in training "
        "settings, so they are reported neither here nor averaged into anything above:",
        "",
    ]
    for e in others:
        n = len(A.of_experiment(runs, e))
        lines.append(f"- `{e}`: {n} runs; {A.experiment_label(runs, e)}")
    return lines + [""]


def decisive_p(inf: A.Inference) -> float:
    """The Holm-adjusted p the verdict turns on: against the other end when σ* is an end,
    the larger of the two when it is interior."""
    v = inf.verdict
    if v.sigma_star == v.sigma_max:
        return inf.p_vs_min_holm
    if v.sigma_star == v.sigma_min:
        return inf.p_vs_max_holm
    return max(inf.p_vs_min_holm, inf.p_vs_max_holm)


def verdict_phrase(inf: A.Inference) -> str:
    """'**not reproduced** (σ* = 0.4, 95 % interval [0.3, 0.4]; p Holm < 0.001; no rise ≥
    0.005: p Holm 0.037)', with the raw rule's verdict where Holm changed it."""
    raw = "" if inf.holm_verdict == inf.verdict.verdict else f"; raw: {inf.verdict.verdict}"
    return (
        f"**{inf.holm_verdict}** (σ* = {sig(inf.verdict.sigma_star)}, "
        f"{pct(A.BOOTSTRAP_LEVEL)} interval {_interval(inf)}; p Holm {pval(decisive_p(inf))}; "
        f"no rise ≥ {inf.no_rise.margin:g}: p Holm {pval(inf.no_rise_p_holm)}{raw})"
    )


def _tau_phrase(tau: dict | None) -> str:
    if tau is None or math.isnan(tau["tau"]):
        return "—"
    return f"{tau['tau']:+.2f} (p {pval(tau['p_value'])}, Holm {pval(tau['p_holm'])})"


def summary(inputs: Inputs, eid: str) -> list[str]:
    infs = A.inference(inputs.runs, eid)
    lines = []
    for q, name in (
        ("gen_error", "the paper's generalization error"),
        ("clean_gap", "the clean gap"),
    ):
        mine = [i for i in infs if i.quantity == q]
        if mine:
            lines.append(
                f"- U-shape in {name}, Holm-adjusted: "
                + "; ".join(f"L = {i.L}: {verdict_phrase(i)}" for i in mine)
                + "."
            )
    thm3 = theorem3(inputs, eid)
    if thm3 is not None and thm3.bounds.size:
        tau = thm3.taus.get("all")
        lines.append(
            f"- Theorem 3's bound: above 1 (vacuous) for {int((thm3.bounds > 1).sum())} of "
            f"{thm3.bounds.size} models"
            + (
                f"; Kendall τ with the measured generalization error {tau['tau']:+.2f} "
                f"(p {pval(tau['p_value'])}, Holm {pval(tau['p_holm'])}, "
                f"{tau['n_models']} models)"
                if tau is not None and math.isfinite(tau["tau"])
                else ""
            )
            + "."
        )
    return lines


@dataclass(frozen=True)
class Theorem3:
    """Theorem 3's bound of one experiment at each model's best α, with their L, and the
    Kendall τ rows of the bound against the generalization error by scope ('all',
    'L=100', ...), each with its Holm-adjusted p (`p_holm`, over the experiment's table)."""

    bounds: np.ndarray
    L: np.ndarray
    taus: dict[str, dict]


def theorem3(inputs: Inputs, eid: str) -> Theorem3 | None:
    """:class:`Theorem3` of experiment `eid`; None when the folder has no bounds."""
    if inputs.bounds is None:
        return None
    best = A.of_experiment(A.best_rows(inputs.bounds), eid)
    taus = {}
    if best.num_rows:
        rows = A.kendall_rows(inputs.bounds, inputs.runs)
        for r, p in zip(rows, A.kendall_holm(rows), strict=True):
            if r["experiment_id"] == eid and r["quantity"] == "bound_thm3":
                taus[r["scope"]] = {**r, "p_holm": p}
    return Theorem3(A.column(best, "bound_thm3"), A.column(best, "L"), taus)


def render_certificates(inputs: Inputs) -> str:
    """REPORT.md of a folder that holds certificates only (`rnngen certify`)."""
    assert inputs.certificates is not None
    meta = table_metadata(inputs.certificates)
    out = [
        "# Certificates report",
        "",
        "Generated by `rnngen report` from the Parquet files under `results/` (do not edit "
        "by hand: the command writes it anew, and a test checks that it matches them).",
        "",
    ]
    out += certificates_section(inputs)
    out += figures_section(inputs.figures, set())
    prov = meta.get("provenance", {})
    out += [
        "## Provenance",
        "",
        f"- Settings: `{json.dumps(meta.get('settings', {}), sort_keys=True)}`.",
        f"- Software: Python {prov.get('python', '?')}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(prov.get("versions", {}).items()) if v)
        + ".",
        "",
    ]
    out += table(
        ["file", "rows", "git commit", "written (UTC)", "Prefect flow run"],
        _provenance_rows({"certificates": inputs.certificates}),
    ) + [""]
    out += origins_section(inputs)
    return "\n".join(out).rstrip() + "\n"


def render(inputs: Inputs) -> str:
    """The whole REPORT.md for the folder's main experiment (the one with most runs)."""
    if inputs.runs is None:
        return render_certificates(inputs)
    A.require(
        inputs.runs,
        (
            "run_id",
            "experiment_id",
            "status",
            "spec_json",
            "finished_at",
            "seconds",
            "hardware",
            "device",
            "data_key",
        ),
        "runs table",
    )
    experiments = A.experiments(inputs.runs)
    if not experiments:
        raise ValueError("the runs table is empty")
    eid = experiments[0]
    profile = table_metadata(inputs.runs).get("profile") or "unknown"
    main = A.of_experiment(inputs.runs, eid)
    out = [
        f"# Reproduction report: profile `{profile}`",
        "",
        "Generated by `rnngen report` from the Parquet files under `results/` (do not edit "
        "by hand: the command writes it anew, and a test checks that it matches them).",
        "",
        PAPER_CLAIM,
        "",
        f"This folder: {_grid_sentence(main)}; {_settings_sentence(inputs.runs, eid)}.",
        "",
    ]
    out += summary(inputs, eid) + [""]
    out += verdict_section(inputs, eid)
    out += cells_section(inputs, eid)
    out += baseline_section(inputs, eid)
    out += history_section(inputs, eid)
    out += lambda_section(inputs.spectrum)
    out += bounds_section(inputs, eid)
    out += delta_section(inputs, eid)
    out += measures_section(inputs)
    out += certificates_section(inputs)
    out += figures_section(inputs.figures, {int(L) for L in A.column(main, "L")})
    out += other_experiments(inputs.runs, eid)
    out += provenance_section(inputs)
    return "\n".join(out).rstrip() + "\n"


def overview(folders: list[tuple[str, Inputs]]) -> list[str]:
    """One table over several output folders (the README's results): per folder and L, the
    two U-shape verdicts after Holm's adjustment (with σ*'s interval and the no-rise test),
    the clean test accuracy at the two ends of σ, and Theorem 3's vacuous count and Kendall
    τ against the generalization error."""
    rows = []
    for name, inputs in folders:
        eid = A.experiments(inputs.runs)[0]
        infs = {(i.quantity, i.L): i for i in A.inference(inputs.runs, eid)}
        acc = {
            (c.L, c.sigma): c
            for c in A.cells(inputs.runs, "test_accuracy")
            if c.experiment_id == eid
        }
        thm3 = theorem3(inputs, eid)
        for L in sorted({L for _, L in infs}):
            gen, gap = infs[("gen_error", L)], infs[("clean_gap", L)]
            sigmas = sorted(s for (ell, s) in acc if ell == L)
            if thm3 is not None:
                of_L = thm3.bounds[thm3.L == L]
                vacuous = f"{int((of_L > 1).sum())} / {of_L.size}"
            else:
                vacuous = "—"
            rows.append(
                [
                    f"`{name}`",
                    str(L),
                    f"{sig(sigmas[0])}–{sig(sigmas[-1])}",
                    str(gen.verdict.pairs),
                    verdict_phrase(gen),
                    verdict_phrase(gap),
                    " → ".join(pm(acc[(L, s)], sign=False) for s in (sigmas[0], sigmas[-1])),
                    vacuous,
                    _tau_phrase(thm3.taus.get(f"L={L}") if thm3 is not None else None),
                ]
            )
    return table(
        [
            "profile",
            "L",
            "σ",
            "seeds",
            "generalization error (paper), Holm-adjusted",
            "clean gap, Holm-adjusted",
            "clean test accuracy, σ_min → σ_max",
            "Thm 3 > 1",
            "Kendall τ (Thm 3, gen. error)",
        ],
        rows,
    )
