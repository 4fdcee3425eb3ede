"""base.yml and the schema agree key for key; every key is documented; docs/config.md is current."""

from pathlib import Path

from maxtext_like.config import docs, paths, schema
from maxtext_like.config.sections import SECTIONS
from maxtext_like.config.unsupported import PARTIAL, UNSUPPORTED
from maxtext_like.config.yaml_io import read_flat_yaml

ROOT = Path(__file__).parents[2]


def test_base_yml_and_schema_agree_key_for_key():
  values, problems = read_flat_yaml(paths.configs_dir() / "base.yml")
  assert not problems
  assert set(values) == set(schema.ALL_KEYS)


def test_every_base_key_has_a_one_line_comment():
  for line in (paths.configs_dir() / "base.yml").read_text().splitlines():
    if line and not line.startswith(("#", " ", "]")):
      assert "  # " in line, line


def test_each_key_in_exactly_one_section_with_a_description():
  seen = {}
  for name, cls in SECTIONS.items():
    for key, info in cls.model_fields.items():
      assert key not in seen, (key, seen.get(key), name)
      seen[key] = name
      assert info.description and len(info.description) > 5, key


def test_maxtext_reference_keys_are_all_present():
  import json
  ref = json.loads((ROOT.parent / "shared" / "reference" / "maxtext_config_types.json").read_text()) if (ROOT.parent / "shared").exists() else None
  if ref is None:  # a checkout without shared/: the key count still guards against losing keys
    assert len(schema.ALL_KEYS) >= 690
    return
  for section, body in ref["sections"].items():
    if section == "DerivedValues":
      continue
    for key in body["fields"]:
      assert key in schema.ALL_KEYS, f"{section}.{key}"


def test_unsupported_lists_name_real_keys():
  assert UNSUPPORTED <= schema.ALL_KEYS
  assert set(PARTIAL) <= schema.ALL_KEYS
  assert not (UNSUPPORTED & set(PARTIAL))


def test_docs_config_md_is_current():
  current = (ROOT / "docs" / "config.md").read_text()
  assert current == docs.markdown(), "docs/config.md is stale: python -m maxtext_like.config --write-docs docs/config.md"


def test_json_schema_lists_every_key_with_description():
  s = docs.json_schema()
  assert set(s["properties"]) == set(schema.ALL_KEYS)
  assert all(p.get("description") for p in s["properties"].values())
