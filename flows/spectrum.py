"""Flow `spectrum`: certified λ_min(E(xxᵀ)) and the spectrum ends for each L."""

from __future__ import annotations

from prefect import flow

from rnngen.corpus import check_lengths
from rnngen.io import output_lock
from rnngen_tasks import ray_pool
from rnngen_tasks.artifacts import publish_provenance, publish_table
from rnngen_tasks.spectrum import spectrum_for_length


@flow(name="spectrum", log_prints=True)
def spectrum(
    out: str = "data",
    lengths: list[int] | None = None,
    n_train: int | None = None,
    check_dense: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
) -> list[dict]:
    """One certified row per L in results/spectrum.parquet (rows already there are kept)."""
    with output_lock(out):
        publish_provenance("spectrum", out)
        lengths = check_lengths(lengths)
        ray_pool.connect(ray_address)
        rows = []
        for L in lengths:
            row = spectrum_for_length(
                out, L, n_train=n_train, workers=workers, check_dense=check_dense, return_state=True
            ).result()
            print(
                f"L={L}: λ_min = {row['lambda_min']:.6e} (residual "
                f"{row['lambda_min_residual']:.1e}), λ_max = {row['lambda_max']:.4e}, "
                f"{row['iterations']} block shift-invert steps"
            )
            rows.append(row)
        publish_table(
            "spectrum",
            [
                {
                    k: r[k]
                    for k in (
                        "L",
                        "n",
                        "lambda_min",
                        "lambda_min_residual",
                        "lambda_max",
                        "status",
                        "seconds",
                    )
                }
                for r in rows
            ],
            "λ_min and λ_max of E(xxᵀ) per L, certified by their residuals",
        )
        return rows
