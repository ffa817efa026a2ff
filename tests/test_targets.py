"""Target profiles: every shipped profile loads; bad profiles fail naming the key; lookup by name or path."""

from __future__ import annotations

import pytest
from conftest import ROOT

from edgeprep.errors import ConfigError, InputError
from edgeprep.targets import available, load_target, parse_target

SHIPPED = ROOT / "edgeprep" / "profiles"

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
    assert {p.origin for p in available().values()} == {"shipped"}
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


def test_shipped_profiles_are_package_data(monkeypatch, tmp_path):
    import edgeprep.targets as targets

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEPREP_TARGETS", raising=False)
    assert not (ROOT / "targets").exists(), "the profiles live in edgeprep/profiles/; ./targets is a user override"
    assert targets.search_path() == [("shipped", SHIPPED)]
    assert sorted(available()) == sorted(p.stem for p in SHIPPED.glob("*.toml"))


def _cli(*args: str) -> int:
    from edgeprep.cli import main

    return main(list(args))


def test_listing_names_where_each_profile_came_from_and_which_wins(tmp_path, monkeypatch, capsys):
    env, cwd = tmp_path / "env", tmp_path / "cwd"
    (cwd / "targets").mkdir(parents=True)
    env.mkdir()
    for d, desc in ((env, "from env"), (cwd / "targets", "from cwd")):
        (d / "litert-cpu.toml").write_text(MINIMAL.replace('"t"', '"litert-cpu"').replace('"d"', f'"{desc}"'))
    (cwd / "targets" / "mine.toml").write_text(MINIMAL.replace('"t"', '"mine"'))
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("EDGEPREP_TARGETS", str(env))
    assert load_target("litert-cpu").description == "from env"
    assert load_target("mine").source == str((cwd / "targets" / "mine.toml").resolve())
    assert _cli("targets") == 0
    rows = [ln.split(None, 2) for ln in capsys.readouterr().out.splitlines()]
    litert = [r for r in rows if r[0] == "litert-cpu"]
    assert [r[1] for r in litert] == ["$EDGEPREP_TARGETS", "./targets", "shipped"]
    assert litert[0][2].startswith("from env") and all("hidden by the $EDGEPREP_TARGETS" in r[2] for r in litert[1:])
    assert ["mine", "./targets"] == next(r for r in rows if r[0] == "mine")[:2]


def test_show_prints_the_profile_exactly_and_unknown_names_list_known(capsys):
    assert _cli("targets", "show", "openvino-cpu") == 0
    assert capsys.readouterr().out == (SHIPPED / "openvino-cpu.toml").read_text()
    assert _cli("targets", "show", "pixel-11") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown target 'pixel-11'" in err[0] and "litert-cpu" in err[0]


def test_no_profiles_found_is_an_error(tmp_path, monkeypatch, capsys):
    import edgeprep.targets as targets

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(targets, "SHIPPED", empty)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEPREP_TARGETS", str(empty))
    assert available() == {}
    assert _cli("targets") == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("edgeprep: error: no target profiles found")
    assert len(out.err.strip().splitlines()) == 1
