"""Errors a user can cause. The CLI prints them as one line, without a traceback."""


class EmpError(Exception):
    """Base class for errors that carry a message meant for the user."""


class InputFileError(EmpError):
    """A file cannot be read as market data. Nothing was written."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(EmpError):
    """A setting (environment variable, option) has an unusable value."""
