"""Devices a benchmark runs on besides this machine: the emulated ARM64 board (``emulator.py``, built by
``make emulator``). Boards and Macs over SSH are device_bench transports configured by ``[bench.ssh]``; fleets of
devices are run by ``pipelines.fleet``."""
