"""Transports: where a benchmark process runs. One module per transport, one explicit registry, lazy imports.

A transport takes a ``device_bench.bench.Job`` (paths on this machine), runs ``python -m device_bench`` for it
somewhere — a fresh local process, an emulator, a board over SSH — and brings the JSON back. Adding a transport is
one module defining a ``Transport`` subclass decorated with ``@register("<name>")`` plus one line below.
"""

from __future__ import annotations

from device_bench.registry import LazyRegistry
from device_bench.transports.base import BenchFailed, Completed, Transport, TransportUnavailable

REGISTRY: LazyRegistry[type[Transport]] = LazyRegistry("transport", {
    "local": "device_bench.transports.local",
    "qemu-aarch64": "device_bench.transports.qemu",
    "ssh": "device_bench.transports.ssh",
}, TransportUnavailable)
register = REGISTRY.register


def names() -> list[str]:
    return REGISTRY.names()


def get_transport(name: str, **settings) -> Transport:
    """An instance of the transport ``name``; ``settings`` are its own (host, user, emulator binary...)."""
    return REGISTRY.get(name)(**settings)


__all__ = ["Transport", "Completed", "BenchFailed", "TransportUnavailable", "REGISTRY", "register", "names",
           "get_transport"]
