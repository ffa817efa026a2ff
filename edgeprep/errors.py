"""The user-facing exception hierarchy.

Every error a user can cause or fix (bad input, an unknown target, a toolchain that refuses a model) is an
``EdgeprepError``: the CLI prints it as one line, ``edgeprep: error: <message>``, and exits with ``exit_code``.
Anything else that escapes is a bug in edgeprep and is shown with its traceback.
"""

from __future__ import annotations


class EdgeprepError(Exception):
    """A problem the user can fix. ``message`` names the problem; ``hint`` says what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class InputError(EdgeprepError):
    """A missing, unreadable or unsupported file or argument."""


class ConfigError(EdgeprepError):
    """An invalid target profile, data manifest or option."""


class DataError(EdgeprepError):
    """Data that is empty, unreadable, non-finite or does not fit the model."""


class ModelError(EdgeprepError):
    """A model file that cannot be loaded or has a structure edgeprep does not handle."""


class ConversionError(EdgeprepError):
    """A converter (TFLite, OpenVINO, coremltools, NNCF) refused the model."""


class RuntimeUnavailable(EdgeprepError):
    """A runtime or tool needed for this step is not installed or cannot run on this machine."""


class VerificationError(EdgeprepError):
    """An artifact does not compute what the float model computes (beyond the allowed tolerance)."""


class ToolchainCrash(EdgeprepError):
    """A toolchain died natively (SIGSEGV, SIGABRT, ...) in a step edgeprep ran in a child process for that reason.

    Exit code 3, the code of an internal error, not 2: nothing in the user's input is known to be wrong (exit code 2
    says it is), the defect is in a toolchain or in the way edgeprep drives it, and it should be reported. Unlike an
    internal error it is one line naming the step and the signal: the parent's traceback would only show a wait.
    """

    exit_code = 3
