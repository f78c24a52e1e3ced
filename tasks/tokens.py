"""Ray's token file on this machine, kept readable by its owner only.

Light on purpose (no Ray, no Prefect): the CLI calls it before anything heavy is imported,
and rnngen_tasks.ray_pool before it starts a local Ray (deployments and workers too).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def secure_local_token(ray_address: str | None) -> str | None:
    """Keep the token of the local Ray readable by its owner only.

    A local Ray started with token authentication and no token anywhere writes a new one to
    ~/.ray/auth_token, readable by every user of the machine (mode 644) -- and that token
    lets anyone who can reach the cluster run code on it. So the CLI writes that file
    first, mode 600, and makes an existing token file (that file, or RAY_AUTH_TOKEN_PATH)
    600 when it is readable by others.
    """
    if ray_address not in (None, "", "local"):
        return None  # a cluster started elsewhere: its token is its owner's business
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get(
        "RAY_AUTH_TOKEN"
    ):
        return None  # no token, or one held in the environment only
    given = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(given).expanduser() if given else Path.home() / ".ray" / "auth_token"
    return private_token_file(path, create=not given)


def private_token_file(path: Path, create: bool) -> str | None:
    """Make the token file `path` private (mode 600); with `create`, write a new random
    token (what Ray writes: 32 random bytes in hex) when there is none. A line saying what
    changed, or None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        if not create:
            return None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None  # left to Ray (which says what is wrong), or written meanwhile
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        return f"wrote a new Ray auth token to {path} (mode 600, readable by you only)"
    if not mode & 0o077:
        return None
    try:
        os.chmod(path, 0o600)
    except OSError as err:
        return (
            f"the Ray auth token {path} is readable by other users (mode {mode:o}) and could "
            f"not be made private ({err.strerror}); run `chmod 600 {path}`."
        )
    return f"the Ray auth token {path} was readable by other users (mode {mode:o}); now 600"
