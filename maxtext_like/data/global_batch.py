"""Per-process batches -> global `jax.Array`s (the "shard" step of the pipeline).

Every process feeds its own rows (`make_text_iterator(process_index=...)`);
`to_global_batch` stitches them into arrays of shape
[global_batch_size, seq_len] laid out by `sharding` (normally the batch axis
over the data-parallel mesh axes). Imports JAX, so it is kept out of the
JAX-free rest of `maxtext_like.data`.
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np


def to_global_batch(
    local_batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding
) -> dict[str, jax.Array]:
  """Assembles this process's rows of every feature into global arrays.

  The global batch size is the local one times `jax.process_count()` (rows of
  process p come p-th along axis 0, matching the document shards).
  """
  out = {}
  for key, value in local_batch.items():
    global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out
