"""The JSON Schema of profile settings (`ectc schema`, committed as docs/profile.schema.json) and
the settings' docs: made from schema.py's tables, never stale, and true of the shipped specs."""

import subprocess
import sys
from pathlib import Path

import pytest

from ectc import jsonio, schema
from ectc.compile import compile_text
from ectc.generate import schedule, settings_dict
from ectc.settings_doc import DOCS, json_schema, profile_table

ROOT = Path(__file__).parent.parent
jsonschema = pytest.importorskip("jsonschema")


def test_committed_schema_is_what_ectc_schema_prints():
    out = subprocess.run([sys.executable, "-m", "ectc", "schema"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert (ROOT / "docs/profile.schema.json").read_text() == out.stdout, \
        "docs/profile.schema.json is stale: run `ectc schema > docs/profile.schema.json`"


def test_every_doc_names_a_declared_setting_and_every_own_setting_has_one():
    stale = [path for path in DOCS if profile_table(tuple(path.split("."))) is None]
    assert stale == []
    # ectc's own settings: the profile's blocks and every setting with a default (the trainers'
    # pass-through keywords are documented by their classes).
    own = [(key,) for key in schema.PROFILE] + [("model",)]
    for block, defaults in schema.DEFAULTS.items():
        if not isinstance(defaults, dict):  # a top-level setting's default, listed above
            continue
        path = ("model", block[len("model_"):]) if block.startswith("model_") else (block,)
        own += [path + (key,) for key in defaults if profile_table(path + (key,)) is not None]
    assert len(own) > 60
    assert [".".join(p) for p in own if ".".join(p) not in DOCS] == []


def _settings(settings):
    """A profile's settings as JSON, the way `ectc schema` describes them: generate's own reading
    of the literals, with `linear(...)` as its explicit schedule object."""
    def schedules(v):
        if isinstance(v, dict) and set(v) == {"fn", "args"}:
            return schedule(v)
        return {k: schedules(x) for k, x in v.items()} if isinstance(v, dict) else v
    return schedules(settings_dict(settings))


def _profiles():
    for path in sorted((ROOT / "specs").glob("*.ect")):
        spec, _ = compile_text(path.read_text())
        for exp in spec.experiments:
            for p in exp.profiles:
                yield f"{path.name}:{p.name}", {"model": {m.type: _settings(m.settings) for m in p.models},
                                                **_settings(p.settings)}


def test_the_shipped_profiles_validate_and_a_wrong_setting_does_not():
    validator = jsonschema.Draft202012Validator(json_schema())
    profiles = dict(_profiles())
    assert len(profiles) >= 6
    for name, settings in profiles.items():
        assert list(validator.iter_errors(settings)) == [], name
    tiny = jsonio.loads(jsonio.dumps(profiles["sycophancy.ect:tiny"]))
    tiny["rl"]["learnig_rate"] = 1e-4
    tiny["seeds"] = 2.5
    assert sorted(e.message for e in validator.iter_errors(tiny)) == [
        "2.5 is not of type 'integer'",
        "Additional properties are not allowed ('learnig_rate' was unexpected)"]
