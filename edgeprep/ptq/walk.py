"""A pass of the fake-quant graph over the calibration batches that stops at a linear layer and resumes there.

AdaRound and bias correction change one linear layer at a time, in execution order, and each layer needs its input
or output with every layer before it final. A new pass from the model input for every layer runs O(L²) steps;
a ``Walk`` keeps each batch's live tensors between reads (those a later step still reads: about the memory of the
widest cut through the graph, for all samples), so every step runs once, and a layer whose parameters the caller
changes once more.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np


class Walk:
    """``qat`` run with ``mode`` over ``batches`` (a list of input arrays), step by step."""

    def __init__(self, qat, batches: list, mode):
        self.qat, self.mode = qat, mode
        self.values = [qat.start(x) for x in batches]
        self.index = {s.name: i for i, s in enumerate(qat.steps)}
        self.last_read = _last_reads(qat.steps, self.values[0] if self.values else {})
        self.next = 0                # the first step not yet run (on the current parameters)

    def tap(self, name: str, what: str, again: bool = True) -> np.ndarray:
        """The input (``what = "in"``) or pre-activation output (``"out"``) of the linear step ``name``, over all
        batches, with every step before it run on the current parameters. With ``again`` the walk then stands
        before ``name``, whose parameters the caller changes: the next read runs it again; else past it."""
        at = self.index[name]
        steps = self.qat.steps[self.next:at + 1]
        mode = replace(self.mode, taps=frozenset({name}))
        out = []
        for values in self.values:
            self.qat.recorded = {}
            self.qat.run_steps(values, steps, mode)
            out.append(np.asarray(self.qat.recorded[f"{name}/@{what}"], np.float32))
        self.qat.recorded = {}
        self.next = at if again else at + 1
        for values in self.values:   # what no step from here on reads
            for key in [k for k in values if self.last_read.get(k, -1) < self.next]:
                del values[key]
        return np.concatenate(out)


def _last_reads(steps, start: dict) -> dict[int, int]:
    """For each Keras tensor id, the index of the last step that reads it (the input step reads ``start``'s)."""
    last = dict.fromkeys(start, 0)
    for i, s in enumerate(steps):
        if s.kind != "input":
            for t in s.node.arguments.keras_tensors:
                last[id(t)] = i
    return last
