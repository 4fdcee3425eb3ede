"""ConfigError: every problem of a config at once, each naming key, value, source and what is allowed."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class Problem:
  """One thing wrong with a config."""

  key: str
  message: str
  value: object = None
  source: str = ""
  allowed: str = ""

  def render(self) -> str:
    parts = [f"{self.key}"]
    if self.value is not None:
      parts.append(f"= {self.value!r}")
    if self.source:
      parts.append(f"(from {self.source})")
    text = " ".join(parts) + f": {self.message}"
    if self.allowed:
      text += f"; allowed: {self.allowed}"
    return text if text.endswith((".", "?", "!")) else text + "."


class ConfigError(ValueError):
  """Raised with every problem found in a config; entry points print it as one paragraph and exit 2."""

  def __init__(self, problems: Iterable[Problem]):
    self.problems = list(problems)
    super().__init__(self.render())

  def render(self) -> str:
    n = len(self.problems)
    head = f"Invalid config ({n} problem{'s' if n != 1 else ''}):"
    return head + " " + " ".join(f"[{i + 1}] {p.render()}" for i, p in enumerate(self.problems))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
  """'did you mean x or y?' for close matches, else ''."""
  close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
  if not close:
    return ""
  return "did you mean " + " or ".join(repr(c) for c in close) + "?"
