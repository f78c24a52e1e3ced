"""Flow `spectrum`: certified λ_min(E(xxᵀ)) and the spectrum ends for each L.

Each L is a unit of the grid executor (task run "spectrum L=100"); lengths with a
certified row under the same settings show as Skipped.
"""

from __future__ import annotations

from prefect import flow

from rnngen.corpus import check_lengths
from rnngen.errors import UserError
from rnngen.io import output_lock
from rnngen.settings import SpectrumSettings
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import labelled, publish_provenance, publish_table, run_name
from rnngen_tasks.executor import run_grid
from rnngen_tasks.spectrum import SpectrumStep, uncertified_error

SUMMARY = ("L", "n", "lambda_min", "lambda_min_residual", "lambda_max", "status", "seconds")


@flow(name="spectrum", log_prints=True, flow_run_name=run_name("spectrum"))
def spectrum(
    out: str = "data",
    lengths: list[int] | None = None,
    n_train: int | None = None,
    check_dense: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
    tol: float = 1e-8,
) -> list[dict]:
    """One certified row per L in results/spectrum.parquet (rows already there are kept)."""
    settings = SpectrumSettings(tol=tol)
    with output_lock(out), labelled("spectrum"):
        publish_provenance("spectrum", out)
        lengths = check_lengths(lengths)
        step = SpectrumStep(out, settings, n_train, workers, check_dense)
        todo = step.pending(lengths)
        if todo:
            ray_pool.connect(ray_address)
        run_grid(step, lengths, todo)
        rows = []
        for L in lengths:
            row = step.recorded(L)
            if row is None:  # failed, or recorded as uncertified: say why, fail
                if L in step.errors:
                    raise UserError(f"spectrum L={L} failed: {step.errors[L]}")
                last = [r for r in step.store.rows("spectrum") if r["L"] == L]
                raise uncertified_error(last[-1])
            print(
                f"L={L}: λ_min = {row['lambda_min']:.6e} (residual "
                f"{row['lambda_min_residual']:.1e}), λ_max = {row['lambda_max']:.4e}, "
                f"{row['iterations']} block shift-invert steps"
            )
            rows.append(row)
        publish_table(
            "spectrum",
            [{k: r[k] for k in SUMMARY} for r in rows],
            "λ_min and λ_max of E(xxᵀ) per L, certified by their residuals",
        )
        return rows
