"""An editable view of a serialized Keras model graph, for pattern -> replacement rewrites (``fold.py``).

Works on the config of a Functional model (layers with ``inbound_nodes`` that reference tensors by
``keras_history = [layer, node, tensor]``) or a Sequential one (a chain). Nested models are separate graphs; the
rewrites never cross a model boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

OUTPUT = "<model output>"
MODEL_CLASSES = ("Functional", "Sequential", "Model")


def _refs(obj: Any) -> Iterator[dict]:
    """Every tensor reference (the dict holding ``keras_history``) inside a nested structure."""
    if isinstance(obj, dict):
        if "keras_history" in obj:
            yield obj
        for v in obj.values():
            yield from _refs(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _refs(v)


@dataclass
class Node:
    name: str
    class_name: str
    entry: dict                      # the layer's serialized entry (edited in place)
    inputs: list[str]                # producer layer names of its first call
    calls: int

    @property
    def config(self) -> dict:
        return self.entry["config"]

    @property
    def is_model(self) -> bool:
        return self.class_name in MODEL_CLASSES and "layers" in self.config


class Graph:
    """The layers of one (sub)model config and who consumes whose output."""

    def __init__(self, model_config: dict, sequential: bool):
        self.model_config = model_config     # the "config" of a Functional/Sequential entry (edited in place)
        self.sequential = sequential
        self.nodes: dict[str, Node] = {}
        self.consumers: dict[str, list[str]] = {}
        self._index()

    @classmethod
    def of(cls, serialized: dict) -> "Graph":
        return cls(serialized["config"], serialized["class_name"] == "Sequential")

    def _index(self) -> None:
        self.nodes.clear()
        self.consumers.clear()
        layers = self.model_config["layers"]
        previous = None
        for entry in layers:
            name = entry.get("name") or entry["config"]["name"]
            if self.sequential:
                inputs = [previous] if previous else []
                calls = 1
            else:
                inbound = entry.get("inbound_nodes", [])
                calls = max(1, len(inbound))
                inputs = [r["keras_history"][0] for r in _refs(inbound[:1])]
                for node in inbound:
                    for ref in _refs(node):
                        self.consumers.setdefault(ref["keras_history"][0], []).append(name)
            self.nodes[name] = Node(name, entry["class_name"], entry, inputs, calls)
            if self.sequential and entry["class_name"] != "InputLayer":
                if previous:
                    self.consumers.setdefault(previous, []).append(name)
                previous = name
            elif self.sequential:
                previous = None
        if self.sequential:
            if previous:
                self.consumers.setdefault(previous, []).append(OUTPUT)
        else:
            for ref in self._outputs():
                self.consumers.setdefault(ref[0], []).append(OUTPUT)

    def _outputs(self) -> list[list]:
        """``output_layers`` as a list of ``[layer, node, tensor]`` (Keras writes a single output unnested)."""
        outs = self.model_config.get("output_layers", [])
        return [outs] if outs and isinstance(outs[0], str) else list(outs)

    def producer(self, node: Node) -> Node | None:
        return self.nodes.get(node.inputs[0]) if len(node.inputs) == 1 else None

    def only_consumer(self, node: Node) -> Node | None:
        users = self.consumers.get(node.name, [])
        return self.nodes.get(users[0]) if len(users) == 1 and users[0] != OUTPUT else None

    def bypass(self, node: Node) -> None:
        """Remove a single-input layer, wiring its consumers (and model outputs) to its input."""
        layers = self.model_config["layers"]
        layers.remove(node.entry)
        if not self.sequential:
            source = next(_refs(node.entry["inbound_nodes"][0]))["keras_history"]
            for entry in layers:
                for ref in _refs(entry.get("inbound_nodes", [])):
                    if ref["keras_history"][0] == node.name:
                        ref["keras_history"] = list(source)
            outs = [list(source) if ref[0] == node.name else ref for ref in self._outputs()]
            single = isinstance(self.model_config["output_layers"][0], str)
            self.model_config["output_layers"] = outs[0] if single else outs
        self._index()

    def submodels(self) -> Iterator[Node]:
        return (n for n in list(self.nodes.values()) if n.is_model)
