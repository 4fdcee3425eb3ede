"""`ConvertError`: bad conversion input, reported as one paragraph with exit code 2."""


class ConvertError(ValueError):
  """Input that cannot be converted (missing/unexpected/mis-shaped tensors, wrong architecture, bad paths)."""


def listing(title: str, items: list[str], limit: int = 30) -> str:
  shown = ", ".join(items[:limit]) + (f" ... ({len(items) - limit} more)" if len(items) > limit else "")
  return f"{title} ({len(items)}): {shown}"
