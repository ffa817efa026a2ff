"""Target profiles: every shipped profile loads; bad profiles fail naming the key; lookup by name or path."""

from __future__ import annotations

import pytest

from edgeprep.errors import ConfigError, InputError
from edgeprep.targets import SHIPPED, available, load_target, parse_target

MINIMAL = 'name = "t"\ndescription = "d"\nformats = ["tflite"]\nprecisions = ["fp32"]\n'


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_profiles_load_and_round_trip(path):
    t = load_target(path)
    assert t.name == path.stem, "a profile's name must match its file name so lookup by name works"
    assert t.description and t.plan()
    again = parse_target(t.to_toml(), "round-trip")
    assert again == t


def test_the_three_required_device_families_are_shipped():
    formats = {f for p in available().values() for f in parse_target(p.read_text(), str(p)).formats}
    assert {"tflite", "openvino", "coreml"} <= formats


def test_lookup_by_name_and_unknown_name_lists_known():
    assert load_target("litert-cpu").formats == ("tflite",)
    with pytest.raises(InputError) as err:
        load_target("no-such-device")
    assert "unknown target 'no-such-device'" in str(err.value) and "litert-cpu" in err.value.hint


@pytest.mark.parametrize("extra, fragment", [
    ('[tflite]\nint8_io = "int4"\n', "tflite.int8_io: 'int4' is not one of"),
    ('[openvino]\nprecision = "f32"\n', "openvino: unknown key 'precision'"),
    ('threads = 0\n', "threads must be >= 1"),
    ('colour = "red"\n', "unknown key 'colour'"),
    ('[gates]\nmin_agreement = 2.0\n', "min_agreement is a fraction"),
    ('[preprocess]\nresize = [0, 28]\n', "resize must be two positive sizes"),
    ('runtime = "litert"\n[coreml]\n', None),
])
def test_invalid_profiles_name_the_offending_key(tmp_path, extra, fragment):
    text = MINIMAL + extra
    p = tmp_path / "t.toml"
    p.write_text(text)
    if fragment is None:
        load_target(p)  # valid: an empty [coreml] table is allowed
        return
    with pytest.raises(ConfigError) as err:
        load_target(p)
    assert fragment in str(err.value)
    assert str(p) in str(err.value)


def test_runtime_must_execute_every_format(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text(MINIMAL.replace('["tflite"]', '["tflite", "coreml"]') + 'runtime = "litert"\n')
    with pytest.raises(ConfigError, match="cannot execute format"):
        load_target(p)


def test_invalid_toml_and_missing_keys(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_target(p)
    p.write_text('name = "x"\n')
    with pytest.raises(ConfigError, match="missing required key 'description'"):
        load_target(p)


def test_search_path_prefers_environment(tmp_path, monkeypatch):
    (tmp_path / "litert-cpu.toml").write_text(MINIMAL.replace('"t"', '"litert-cpu"').replace('"d"', '"mine"'))
    monkeypatch.setenv("EDGEPREP_TARGETS", str(tmp_path))
    assert load_target("litert-cpu").description == "mine"
