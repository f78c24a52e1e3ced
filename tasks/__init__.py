"""The orchestration layer: each stage's step, the grid executor and the results store.

This folder, `tasks/`, is installed as the package `rnngen_tasks` (pyproject.toml maps
it), so code imports it as `from rnngen_tasks.store import Store`, never `from tasks`:
pip then puts no generic top-level name such as `tasks` into site-packages.

Stage modules (train, bounds, spectrum, measures, certify, figures, report) wrap the pure
layer (`rnngen`) with I/O and never import each other; what they share lives in
`executor` (runs any stage's units), `store` (every results read and write), `data` (the
corpus), `ray_pool` (Ray) and `artifacts` (what Prefect shows).
"""

from rnngen.provenance import set_flow_run_source


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None


# Result files written from inside a flow run record its id (rnngen.provenance).
set_flow_run_source(_flow_run_id)


def run_logger():
    """The current Prefect run's logger (its lines reach the UI), or this package's own
    logger when called outside a flow or task run (e.g. from a test or a benchmark)."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("rnngen")
