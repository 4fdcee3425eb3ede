"""`source_checkpoint_layout=safetensors`: `load_parameters_path` names a Hugging Face safetensors directory
(config.json + *.safetensors), mapped into the model's parameters on load with the family's own HF table, the same
mapping `convert to_maxtext` writes to disk, without the intermediate orbax checkpoint."""

from __future__ import annotations

import tempfile

import jax
import numpy as np

from maxtext_like.runtime.checkpoints import CheckpointError


def params_from_safetensors(cfg, spec, abstract_params):
  """The parameters of `abstract_params` (shapes, dtypes, shardings) read from the HF directory."""
  from maxtext_like.convert.errors import ConvertError
  from maxtext_like.convert.safetensors_io import checkpoint_files
  from maxtext_like.convert.to_maxtext import _check_preset, _stream, read_hf_config
  from maxtext_like.models.hf_registry import HFConfigError, mapping_for_architecture
  path = cfg.checkpointing.load_parameters_path
  try:
    hf = read_hf_config(path)
    arch = (hf.get("architectures") or [hf.get("model_type", "?")])[0]
    mapping = mapping_for_architecture(arch)
    _check_preset(cfg, mapping.model_keys_from_hf(hf), mapping.decoder_blocks, arch)
    files = checkpoint_files(path)
    if not files:
      raise ConvertError(f"{path} has no *.safetensors files")
    with tempfile.TemporaryDirectory(prefix="maxtext_like_hf_") as staging:
      with jax.set_mesh(None):  # host-side numpy; the model's logical axis names are not mesh axes
        arrays = _stream(mapping, spec, files, staging)
      # Leaves by dotted path into the abstract tree, placed straight into their shardings.
      paths, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
      leaves = []
      for path, s in paths:
        key = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path
                       if not isinstance(k, jax.tree_util.GetAttrKey))  # skip each Variable's .value
        leaves.append(jax.device_put(np.asarray(arrays[key], s.dtype), s.sharding))
      return jax.tree_util.tree_unflatten(treedef, leaves)
  except (ConvertError, HFConfigError) as e:
    raise CheckpointError(f"load_parameters_path={path} with source_checkpoint_layout=safetensors: {e}") from None
