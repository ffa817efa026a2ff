"""Verify stage: does each artifact compute what the float model computes?

The float reference is computed once per evaluation set and reused for every artifact. Each artifact runs through
the same ``device_bench`` runner that benchmarks it; artifacts no runtime here can execute are reported
``unmeasured`` with the reason, never skipped silently.

Thresholds are judged, and the status is given, by ``edgeprep.gate`` (``Goal``, ``judge``): the same judge the
regression gate uses. The status of an artifact says what happened: ``verified`` — numerics measured and at least
one check evaluated, every one passed; ``measured`` — numerics measured, no check to pass or fail; ``unmeasured`` —
numerics not measured (the reason says why; checks that need no execution, like the size, still apply); ``failed``
— a check failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from device_bench import metrics
from device_bench.runners import open_model
from device_bench.runners.base import ArtifactError, RunnerUnavailable, UnsupportedArtifact
from edgeprep._util import quiet
from edgeprep.artifact import Artifact
from edgeprep.config.gates import Thresholds
from edgeprep.data import Dataset, check_labels
from edgeprep.errors import VerificationError
from edgeprep.gate import accuracy_drop, goals, judge
from edgeprep.models import ModelHandle

BATCH = 256

# Extra per-artifact checks a stage adds (e.g. export integrity): (artifact, outputs or None when the artifact was
# not executed, reference or None) -> check entries shaped like ``check``'s.
ArtifactCheck = Callable[[Artifact, "np.ndarray | None", "Reference | None"], list[dict]]


@dataclass(frozen=True)
class Reference:
    """Float model outputs on the evaluation set: computed once, shared by every artifact's verification."""

    outputs: np.ndarray
    labels: np.ndarray | None
    source: str

    @property
    def samples(self) -> int:
        return len(self.outputs)

    @property
    def accuracy(self) -> float | None:
        return None if self.labels is None else metrics.accuracy(self.outputs, self.labels)

    def describe(self) -> dict:
        return {"runtime": "float model (Keras/TensorFlow, ONNX Runtime for .onnx)", "samples": self.samples,
                "accuracy": self.accuracy, "source": self.source}


def reference(model: ModelHandle, data: Dataset, limit: int | None = None, progress=None) -> Reference:
    """The float model's outputs on the first ``limit`` samples of ``data``. Labels that name no output of the model
    are refused first (and again from the outputs computed, when the model's output shape has a dynamic axis)."""
    what = f"the model ({model.path.name})"
    check_labels(data, model.output_shape, what)
    outs, labels = [], []
    with quiet():
        for x, y in data.batches(BATCH, limit):
            outs.append(model.predict(x, BATCH))
            labels.append(y)
            if progress:
                progress(len(x))
    outputs = np.concatenate(outs)
    check_labels(data, outputs.shape[1:], what)
    return Reference(outputs, None if labels[0] is None else np.concatenate(labels), data.source)


def run_artifact(artifact: Artifact, data: Dataset, threads: int | None, limit: int | None = None,
                 progress=None) -> tuple[np.ndarray, dict]:
    """All outputs of ``artifact`` on ``data`` and a description of what executed them."""
    with quiet():
        session = open_model(artifact.runtime, str(artifact.path), threads, artifact.runtime_options)
    outs = []
    for x, _ in data.batches(BATCH, limit):
        outs.append(session.run(x))
        if progress:
            progress(len(x))
    return np.concatenate(outs), session.describe()


def check(values: dict, thresholds: Thresholds, size_bytes: int) -> list[dict]:
    """Compare measured values with thresholds (``edgeprep.gate.goals``). Pure: one entry per threshold that is set
    and measurable; a value that is not a finite number never passes."""
    measured = {**values, "size_bytes": size_bytes}
    return [{"name": g.name, "value": measured[g.metric], "threshold": g.limit, "passed": g.met(measured[g.metric])}
            for g in goals(thresholds) if measured.get(g.metric) is not None]


def unmeasured(artifact: Artifact, reason: str, thresholds: Thresholds,
               extra_checks: Sequence[ArtifactCheck] = ()) -> dict:
    """The verification object of an artifact whose numerics were not measured, with the reason.

    Checks that need no execution (size, and ``extra_checks`` given no outputs) still apply: failing one fails
    the artifact; passing them leaves it ``unmeasured``.
    """
    checks = check({}, thresholds, artifact.size_bytes) + [c for f in extra_checks for c in f(artifact, None, None)]
    return {"status": judge(False, checks), "reason": reason, "metrics": None, "checks": checks}




def verify(artifact: Artifact, ref: Reference, data: Dataset, thresholds: Thresholds, threads: int | None = None,
           progress=None, extra_checks: Sequence[ArtifactCheck] = (), model: ModelHandle | None = None) -> dict:
    """Metrics and checks for one artifact, as the ``verification`` object of the report.

    The artifact runs on the same samples as the reference: the first ``ref.samples`` of ``data``. Given the float
    ``model`` the artifact was converted from, Core ML artifacts (run by the reference executor) also get a
    per-layer error on a few samples.
    """
    if artifact.runtime is None:
        return unmeasured(artifact, artifact.unavailable_reason, thresholds, extra_checks)
    start = time.perf_counter()
    try:
        outputs, runtime = run_artifact(artifact, data, threads, ref.samples, progress)
    except UnsupportedArtifact as exc:      # e.g. an op the Core ML reference executor does not implement
        return unmeasured(artifact, f"numerics not measured: {exc}", thresholds, extra_checks)
    except (ArtifactError, RunnerUnavailable) as exc:
        raise VerificationError(f"{artifact.label}: {exc}") from None
    values = metrics.compare(outputs, ref.outputs, ref.labels)
    if values["accuracy"] is not None and ref.accuracy is not None:
        values["accuracy_drop"] = accuracy_drop(ref.accuracy, values["accuracy"])
    checks = check(values, thresholds, artifact.size_bytes)
    bad = int(np.size(outputs) - np.count_nonzero(np.isfinite(outputs)))
    if bad:      # whatever thresholds are set, an artifact that computes NaN/inf is broken
        checks.append({"name": "finite_outputs", "value": bad, "threshold": 0, "passed": False,
                       "detail": f"{bad} of {np.size(outputs)} output values are NaN or infinite"})
    checks += [c for f in extra_checks for c in f(artifact, outputs, ref)]
    result = {"status": judge(True, checks), "reason": None, "metrics": values, "checks": checks,
              "executed_by": runtime}
    if model is not None and artifact.runtime == "coreml-ref":
        from edgeprep.backends.coreml.layers import SAMPLES, layer_errors

        x = np.concatenate([b for b, _ in data.batches(BATCH, min(SAMPLES, ref.samples))])
        with quiet():
            result["layers"] = layer_errors(model, artifact.path, x)
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result
