"""Row types and column lists that the result schemas are built from, shared with the code
that fills them, and importing neither torch nor scipy: the command line's pre-start checks
read results through `rnngen.schemas`, and each heavy import there would cost a second or
more of start-up (bench/bench_startup.py)."""

from __future__ import annotations

from dataclasses import dataclass

# The quantiles of the margin and norm distributions recorded per model.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class EpochLog:
    """One epoch of a run's history (one row of results/history.parquet).

    train_accuracy_noisy is the running accuracy on the noisy batches the epoch trained on;
    train_accuracy_clean and test_accuracy are measured after the epoch on fixed subsets of
    `eval_rows` reviews (HISTORY_ROWS). seconds: training alone; eval_seconds: the two
    measurements.
    """

    epoch: int
    train_loss: float
    train_accuracy_noisy: float
    train_accuracy_clean: float
    test_accuracy: float
    eval_rows: int
    seconds: float
    eval_seconds: float


# The columns of a certificate row, in order; every row has all of them (None, or an empty
# list, where a cell stopped early: a null in any column type). `delta` and `delta_mc` are
# the confidences that enter the two kl⁻¹ steps (delta after its split over the grid;
# delta_total before), so that certificate ==
# kl⁻¹(kl⁻¹(emp_error_mc, ln(2/delta_mc)/m), (kl + ln(2√n_bound/delta))/n_bound).
ROW_COLUMNS: tuple[str, ...] = (
    # what was certified, and how it ended
    "run_id", "L", "sigma", "seed", "settings_id", "status", "reason",
    # the split
    "n_prior", "n_bound", "n_overlap", "prior_ids_digest", "bound_ids_digest",
    # the settings that enter the numbers
    "mc_draws", "mc_passes", "m", "m_test", "delta", "delta_mc", "delta_total", "confidence",
    "objective", "p_min", "prior_var_grid", "posterior_epochs", "posterior_lr",
    "posterior_input_noise", "select_draws",
    # the prior mean
    "prior_epochs", "prior_train_loss", "train_error_prior_on_bound",
    # the grid and the chosen posterior
    "selection_estimates", "kl_grid", "objective_grid", "prior_var", "prior_var_index",
    "posterior_objective", "posterior_risk", "posterior_train_error",
    "train_error_mean_on_bound", "posterior_mean_shift", "posterior_std_ratio",
    # the certificate
    "kl", "kl_term", "emp_error_mc", "emp_error_mc_std", "emp_error_bound", "certificate",
    # measured after the certificate
    "n_test", "test_error_stochastic", "test_error_mean", "test_error_prior",
    # time
    "prior_seconds", "posterior_seconds", "mc_seconds", "test_seconds", "seconds",
)  # fmt: skip
LIST_COLUMNS = ("prior_var_grid", "selection_estimates", "kl_grid", "objective_grid")
