"""``edgeprep convert`` and ``edgeprep.convert``'s int8 from edgeprep's own PTQ: one function for both, so the
command and the Python API give the artifact ``run`` makes from the same model, data and target."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeprep.artifact import Artifact


def choice_reference(model, calibration, target, reporter):
    """The float model's outputs on the calibration samples ``engine = "auto"`` measures its candidates on (the
    first ``[verify] samples`` of them)."""
    from edgeprep.stages.verify import reference

    n = min(calibration.count, target.verify.samples or calibration.count)
    with reporter.step("Float reference outputs on the calibration data (PTQ engine choice)", total=n) as advance:
        return reference(model, calibration, n, advance)


def owned_int8(model, fmt: str, target, calibration, out: Path, reporter) -> Artifact | None:
    """int8 from edgeprep's own PTQ parameters (``[quantize.ptq] engine = "edgeprep"``), or the candidate chosen
    on the calibration data (``engine = "auto"``, ``stages.ptq_choice``); None when the engine is the converter's
    own or the parameters cannot be computed for this model (a warning, then the converter's own PTQ)."""
    from edgeprep.stages import ptq

    engine = target.quantize.ptq.engine
    if engine == "vendor":
        return None
    made: dict = {}

    def owned(activations: str):
        if activations not in made:
            with reporter.step(f"edgeprep PTQ ({ptq.label(activations)})"):
                params, warning = ptq.owned_or_warning(model, calibration, target.quantize, activations,
                                                       step=lambda m: reporter.info(f"  {m}"))
            if warning:
                reporter.warn(warning)
            made[activations] = params
        return made[activations]

    with tempfile.TemporaryDirectory() as work:
        if engine == "auto":
            from edgeprep.stages import ptq_choice

            cal_ref = choice_reference(model, calibration, target, reporter)
            art, _, record = ptq_choice.choose_int8(model, fmt, Path(out), Path(work), target, calibration, owned,
                                                    cal_ref, target.threads, step=lambda m: reporter.info(f"  {m}"))
            reporter.info(ptq_choice.line(f"{fmt} int8", record))
            return art
        params = owned(ptq.activations_for(target.quantize, fmt))
        if params is None:
            return None
        with reporter.step(f"Converting to {fmt} int8 (edgeprep PTQ)"):
            art, _, _ = ptq.export_owned(params, model, fmt, Path(out), Path(work), target, calibration)
        return art


__all__ = ["choice_reference", "owned_int8"]
