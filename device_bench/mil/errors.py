"""The executor's exceptions. ``UnsupportedOp`` means "not modelled here": the artifact's numerics stay unmeasured."""

from __future__ import annotations


class MILError(ValueError):
    """Base class: the package cannot be read or executed by the reference executor."""


class SpecError(MILError):
    """The package is not an ML Program this executor can read (with the reason)."""


class UnsupportedOp(MILError):
    """The program uses an op (or an op variant) the executor does not implement. Never guessed."""

    def __init__(self, op_type: str, detail: str = ""):
        self.op_type = op_type
        self.detail = detail
        super().__init__(f"op {op_type}" + (f" ({detail})" if detail else ""))


class ExecutionError(MILError):
    """An op failed on the values it was given (a malformed program or input)."""
