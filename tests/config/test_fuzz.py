"""Hypothesis: arbitrary override strings and YAML documents give a Config or a ConfigError, never another exception."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxtext_like.config import ConfigError, load_config
from maxtext_like.config import schema

KEYS = sorted(schema.ALL_KEYS)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
values = st.one_of(text, st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str), st.sampled_from(
    ["none", "null", "true", "[1, 2", "[a, b]", "{x: 1}", "1_000", "-1", "1e-3", "0.5", "''", "~", ":", "!!python/object:os.system"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), text), values), max_size=4))
def test_override_strings(pairs):
  argv = ["base.yml", *[f"{k}={v}" for k, v in pairs]]
  try:
    load_config(argv, env={})
  except ConfigError:
    pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200), st.sampled_from(KEYS))
def test_yaml_documents(doc, key):
  with tempfile.TemporaryDirectory() as d:
    for body in (doc, f"base_config: base.yml\n{doc}", f"base_config: base.yml\n{key}: {doc}"):
      p = Path(d) / "c.yml"
      p.write_text(body)
      try:
        load_config([str(p)], env={})
      except ConfigError:
        pass
