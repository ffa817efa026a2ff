"""BatchNorm code shared by the stages and QAT: the editable Keras graph, BN arithmetic in numpy, telemetry.

    graph.py      where the BatchNorm layers are, what precedes and follows them, sub-models to run
    maths.py      folding BN into linear layers, streamed per-channel statistics (numpy only)
    rewrite.py    an editable view of a serialized Keras graph, for pattern -> replacement rewrites
    telemetry.py  per-layer BN health: stale, dead or exploding channels, statistics against fresh data
"""
