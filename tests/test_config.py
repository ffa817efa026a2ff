"""Frozen config objects: strict construction from mappings, and the round trip back to TOML."""

from __future__ import annotations

import tomllib
from dataclasses import FrozenInstanceError, dataclass
from typing import Literal

import pytest

from edgeprep.config import dump_toml, from_mapping, merge, to_mapping
from edgeprep.config.gates import Gates
from edgeprep.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    size: int = 1


@dataclass(frozen=True)
class Outer:
    name: str
    mode: Literal["a", "b"] = "a"
    ratio: float = 0.5
    flags: tuple[str, ...] = ()
    pair: tuple[int, int] | None = None
    inner: Inner = Inner()
    on: bool = False


def test_builds_nested_frozen_values():
    o = from_mapping(Outer, {"name": "x", "mode": "b", "ratio": 2, "flags": ["p", "q"], "pair": [3, 4],
                             "inner": {"size": 7}, "on": True}, "t")
    assert o == Outer("x", "b", 2.0, ("p", "q"), (3, 4), Inner(7), True)
    assert isinstance(o.ratio, float)
    with pytest.raises(FrozenInstanceError):
        o.name = "y"


@pytest.mark.parametrize("data, fragment", [
    ({"name": "x", "colour": 1}, "unknown key 'colour'"),
    ({"name": "x", "inner": {"sise": 1}}, "t.inner: unknown key 'sise'"),
    ({"name": "x", "mode": "c"}, "t.mode: 'c' is not one of 'a', 'b'"),
    ({"name": "x", "ratio": "high"}, "t.ratio: expected a finite number"),
    ({"name": "x", "on": 1}, "t.on: expected true or false"),
    ({"name": "x", "pair": [1]}, "t.pair"),
    ({"name": 3}, "t.name: expected a string"),
    ({"name": "x", "inner": {"size": True}}, "expected an integer"),
])
def test_rejects_bad_values_naming_the_key(data, fragment):
    with pytest.raises(ConfigError) as err:
        from_mapping(Outer, data, "t")
    assert fragment in str(err.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError) as err:
        from_mapping(Inner, {"big": 1}, "t")
    assert err.value.hint == "allowed keys are size"


def test_round_trip_through_toml():
    o = Outer("x", "b", 0.25, ("p",), (1, 2), Inner(3), True)
    text = dump_toml(to_mapping(o))
    assert from_mapping(Outer, tomllib.loads(text), "t") == o


def test_merge_is_deep_and_later_wins():
    assert merge({"a": 1, "t": {"x": 1, "y": 2}}, {"t": {"y": 3}, "b": 4}) == {"a": 1, "t": {"x": 1, "y": 3}, "b": 4}


def test_gates_precision_override_layers_over_global():
    g = from_mapping(Gates, {"max_accuracy_drop": 0.2, "min_agreement": 0.99,
                             "int8": {"max_accuracy_drop": 1.0}}, "gates")
    assert g.for_precision("fp32").max_accuracy_drop == 0.2
    int8 = g.for_precision("int8")
    assert (int8.max_accuracy_drop, int8.min_agreement) == (1.0, 0.99)


def test_gates_validate_ranges():
    with pytest.raises(ConfigError, match="min_agreement is a fraction"):
        from_mapping(Gates, {"min_agreement": 99}, "gates")
