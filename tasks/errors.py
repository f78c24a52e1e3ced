"""How a failed unit's cause is told in one sentence (its row's `error`/`reason`)."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_text(error: BaseException) -> str:
    """One clean sentence naming the cause of a failed unit (the full traceback is in the
    log): a task's own exception as `Type: message`, without Ray's wrapping and colours."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        text = f"{type(cause).__name__}: {cause}"
    else:
        lines = [ln for ln in _ANSI.sub("", str(error)).splitlines() if ln.strip()]
        text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return _ANSI.sub("", text).strip()[:2000]
