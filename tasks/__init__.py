"""Prefect tasks wrapping the pure layer (`rnngen`) with I/O, skipping and retries."""

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
