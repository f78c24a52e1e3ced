"""Prefect tasks wrapping the pure layer (`rnngen`) with I/O, skipping and retries."""

from rnngen.provenance import set_flow_run_source


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return str(run_id) if run_id else None


# Result files written from inside a flow run record its id (rnngen.provenance).
set_flow_run_source(_flow_run_id)
