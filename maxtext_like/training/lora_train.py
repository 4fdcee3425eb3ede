"""LoRA / QLoRA training state: only the adapters are trained and held in the optimizer state.

The train state keeps its usual keys ({"step", "params", "opt_state", "rest", "loss_window"}) with
`params` = the adapters (`nnx.LoRAParam`) and the frozen base parameters inside `rest`, next to the RNG
counters: the step differentiates `params` only and carries `rest` through (training/step.py untrained_state),
so the optimizer's moments exist for the adapters alone and the base comes out of every step untouched.

Checkpoints are adapter-only: `rest` is saved without the base, and a resumed run takes its base again from
`load_parameters_path` (or the init seed). `lora_restore_path` starts from such a checkpoint's adapters,
`hf_lora_adapter_path` from a Hugging Face PEFT adapter (runtime/lora_adapters.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from maxtext_like.models import ModelSpec, build_model
from maxtext_like.models import lora as lora_lib
from maxtext_like.models.sharding import logical_to_mesh_sharding
from maxtext_like.runtime import checkpoints as reading
from maxtext_like.runtime import lora_adapters
from maxtext_like.training.state import SKIP_WINDOW, StateLayout, check_divisible, mirror_param_shardings



@dataclasses.dataclass
class LoraLayout(StateLayout):
  """StateLayout plus what LoRA's loading needs."""

  lspec: lora_lib.LoraSpec | None = None
  base_abstract: Any = None  # the plain model's float parameters, sharded: what load_parameters_path restores into
  from_base_fn: Any = None  # jitted: (key, base params) -> state
  saved_abstract: Any = None  # the adapter-only checkpoint's tree


def without_base(rest: nnx.State) -> nnx.State:
  """`rest` minus the frozen base parameters: what an adapter-only checkpoint keeps."""
  return nnx.filter_state(rest, nnx.Not(nnx.Param))


def build_lora_layout(spec: ModelSpec, lspec: lora_lib.LoraSpec, optimizer: optax.GradientTransformation, mesh: Mesh,
                      rules, *, loss_window: int) -> LoraLayout:
  """Abstract init, shardings (adapters by the logical names qwix gives them, the base like the plain model's
  parameters), and jitted initialisers from a key or from loaded base parameters."""
  abs_key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  abs_model = nnx.eval_shape(lambda: lora_lib.lora_model(spec, lspec, jax.random.PRNGKey(0)))
  graphdef, abs_adapters, abs_rest = nnx.split(abs_model, nnx.LoRAParam, ...)
  adapter_shardings = logical_to_mesh_sharding(abs_adapters, mesh, rules)
  rest_shardings = logical_to_mesh_sharding(abs_rest, mesh, rules)  # QLoRA kernels: values and scales (models/ptq.py)
  replicated = NamedSharding(mesh, PartitionSpec())
  abs_base = nnx.state(nnx.eval_shape(lambda: build_model(spec, nnx.Rngs(0))), nnx.Param)
  base_shardings = logical_to_mesh_sharding(abs_base, mesh, rules)
  check_divisible(abs_base, base_shardings)
  check_divisible(abs_adapters, adapter_shardings)

  def from_base(key, base):
    _, adapters, rest = nnx.split(lora_lib.lora_model(spec, lspec, key, base), nnx.LoRAParam, ...)
    return {"step": jnp.zeros((), jnp.int32), "params": adapters, "opt_state": optimizer.init(adapters),
            "rest": rest, SKIP_WINDOW: jnp.zeros((loss_window,), jnp.float32)}

  init = lambda key: from_base(key, None)  # noqa: E731
  abstract_tree = jax.eval_shape(init, abs_key)
  shardings = {"step": replicated, "params": adapter_shardings,
               "opt_state": mirror_param_shardings(abstract_tree["opt_state"], abstract_tree["params"],
                                                   adapter_shardings, replicated),
               "rest": rest_shardings, SKIP_WINDOW: replicated}
  shardings = jax.tree.map(lambda a, s: s, abstract_tree, shardings)
  sds = lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)  # noqa: E731
  abstract = jax.tree.map(sds, abstract_tree, shardings)
  base_abstract = jax.tree.map(sds, abs_base, base_shardings)
  saved_abstract = {**abstract, "rest": without_base(abstract["rest"])}
  return LoraLayout(graphdef=graphdef, abstract=abstract, shardings=shardings, init_fn=jax.jit(init, out_shardings=shardings),
                    lspec=lspec, base_abstract=base_abstract,
                    from_base_fn=jax.jit(from_base, out_shardings=shardings, donate_argnums=1),
                    saved_abstract=saved_abstract)


def initial_state(trainer) -> tuple[Any, int]:
  """Resume from the run's latest adapter-only checkpoint, else start: base from load_parameters_path (or the init
  seed), adapters from lora_restore_path, hf_lora_adapter_path, or fresh (B = 0)."""
  from maxtext_like.training import checkpointing as ckpt
  cfg, layout = trainer.cfg, trainer.layout
  c = cfg.checkpointing
  key = jax.random.PRNGKey(cfg.training.init_weights_seed)
  peft = None
  if c.hf_lora_adapter_path:  # read outside the mesh: the PEFT layout comes from an abstract unsharded model
    peft = lora_adapters.adapters_from_peft(c.hf_lora_adapter_path, trainer.spec, layout.lspec,
                                            lora_lib.abstract_adapters(trainer.spec, layout.lspec))
  with jax.set_mesh(trainer.mesh):
    if c.load_parameters_path:
      base = reading.restore_from_path(c.load_parameters_path, {"params": layout.base_abstract}, params_only=True)
      state = layout.from_base_fn(key, base)
    else:
      state = layout.init_fn(key)
    restored = ckpt.restore_latest(trainer.mngr, layout.saved_abstract) if trainer.mngr is not None else None
    if restored is not None:
      saved, data_state, step = restored
      trainer.data.set_state(trainer._own_data_state(data_state, step))
      print(f"resumed LoRA adapters from {cfg.derived.checkpoint_dir}/{step}", flush=True)
      return {**saved, "rest": nnx.merge_state(state["rest"], saved["rest"])}, step
    if cfg.finetune.lora_restore_path:
      state["params"] = lora_adapters.restore_adapters(cfg.finetune.lora_restore_path, layout.abstract["params"])
    elif peft is not None:
      state["params"] = jax.tree.map(jax.device_put, peft, layout.shardings["params"])
    if cfg.finetune.lora_restore_path or c.hf_lora_adapter_path:
      state["opt_state"] = jax.jit(trainer.optimizer.init, out_shardings=layout.shardings["opt_state"])(state["params"])
  return state, 0


def saved_part(state: dict) -> dict:
  """The adapter-only checkpoint of a LoRA train state."""
  return {**state, "rest": without_base(state["rest"])}
