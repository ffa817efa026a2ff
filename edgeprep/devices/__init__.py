"""Devices a benchmark runs on besides this machine: the qemu-aarch64 emulator, boards and Macs over SSH, and
fleets of them benchmarked in parallel (``edgeprep bench --targets a,b,c``)."""
