"""Orchestration: each edgeprep command that produces a run directory is one function here.

    run.py       ``edgeprep run``: calibrate -> fold -> convert -> verify -> per-layer error / keep-float -> bench
    quantize.py  ``edgeprep quantize``: the run pipeline restricted to int8 (PTQ), or QAT fine-tuning and export
    refine.py    per-layer error and the keep-float search of int8 artifacts, shared by run and quantize
    bench.py     ``edgeprep bench``: existing artifacts benchmarked (and verified when data is given)
    fleet.py     several targets, one lane per device, run in parallel

Pipelines call stages, backends and report writers; nothing below imports a pipeline.
"""
