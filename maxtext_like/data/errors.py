"""`DataError`: bad input data (missing column, undecodable row, empty file, id >= vocab_size).

A `ValueError` subclass, so callers that catch ValueError keep working; entry
points report it as one paragraph and exit 2 (see `maxtext_like.cli_common`).
Messages name the file (or dataset) and the row.
"""


class DataError(ValueError):
  """The data (not the code, not the config) is wrong; the message says where."""
