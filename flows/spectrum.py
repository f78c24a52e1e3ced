"""Flow `spectrum`: certified λ_min(E(xxᵀ)) and the spectrum ends for each L."""

from __future__ import annotations

from prefect import flow

from rnngen.corpus import check_lengths
from rnngen.io import output_lock
from tasks import ray_pool
from tasks.spectrum import spectrum_for_length


@flow(name="spectrum", log_prints=True)
def spectrum(out: str = "data", lengths: list[int] | None = None, n_train: int | None = None,
             check_dense: bool = False, ray_address: str | None = None,
             workers: int | None = None) -> list[dict]:
    """One certified row per L in results/spectrum.parquet (rows already there are kept)."""
    with output_lock(out):
        lengths = check_lengths(lengths)
        ray_pool.connect(ray_address)
        rows = []
        for L in lengths:
            row = spectrum_for_length(out, L, n_train=n_train, workers=workers,
                                      check_dense=check_dense)
            print(f"L={L}: λ_min = {row['lambda_min']:.6e} (residual "
                  f"{row['lambda_min_residual']:.1e}), λ_max = {row['lambda_max']:.4e}, "
                  f"{row['iterations']} block shift-invert steps")
            rows.append(row)
        return rows
