"""Errors that speak to the user: what was wrong, which file or parameter, what to do."""


class UserError(Exception):
    """A predictable mistake (bad input, missing data, bad parameter).

    The CLI prints the message as one paragraph and exits non-zero, without a traceback.
    """


class DataError(UserError):
    """Input data is missing, corrupt or of the wrong shape."""


class FetchError(DataError):
    """A download failed in a way that may pass on a second try (network, registry)."""


class ChecksumError(DataError):
    """A file's sha256 differs from the expected one."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            "The file was not used; delete it and fetch it again, or pass a good copy."
        )
        self.path, self.expected, self.actual = path, expected, actual


class ParameterError(UserError, ValueError):
    """A parameter value is invalid; the message names the parameter."""
