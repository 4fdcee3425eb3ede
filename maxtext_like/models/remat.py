"""Remat (activation checkpointing) policies by MaxText name.

Decoder layers tag intermediates with `jax.ad_checkpoint.checkpoint_name`
(spec.REMAT_NAMES); a policy says which tagged values the backward pass keeps
on device, which it offloads to host memory, and (implicitly) that the rest
is recomputed. 'none' disables remat; 'full' keeps nothing but layer inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax

from maxtext_like.models.layer_specs import RematSpec

_QKV = ("query_proj", "value_proj", "key_proj", "qkv_proj")
_MINIMAL = (*_QKV, "out_proj", "mlpwi_0", "mlpwi_1", "mlpwi", "mlpwo")

# policy name -> (names saved on device, names offloaded to host)
_NAMED_POLICIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "minimal": (_MINIMAL, ()),
    "minimal_with_context": ((*_MINIMAL, "context"), ()),
    "save_dot_with_context_except_mlp": ((*_QKV, "context", "out_proj"), ()),
    "save_dot_except_mlpwi": ((*_QKV, "out_proj", "mlpwo"), ()),
    "save_dot_except_mlp": ((*_QKV, "out_proj"), ()),
    "save_qkv_proj": (_QKV, ()),
    "save_out_proj": (("out_proj",), ()),
    "qkv_proj_offloaded": ((), ("query_proj", "value_proj", "key_proj")),
    "minimal_offloaded": ((), _MINIMAL),
}

OFFLOAD_MEMORY_KIND = "pinned_host"


def host_offload_supported(memory_kinds: Iterable[str] | None = None) -> bool:
  """Whether the default backend's devices have 'pinned_host' memory."""
  if memory_kinds is None:
    memory_kinds = [m.kind for m in jax.devices()[0].addressable_memories()]
  return OFFLOAD_MEMORY_KIND in set(memory_kinds)


def saved_and_offloaded(spec: RematSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(names kept on device, names offloaded) for a named or 'custom' policy."""
  if spec.remat_policy == "custom":
    locs = spec.remat_locations
    return (tuple(n for n, w in locs.items() if w == "device"), tuple(n for n, w in locs.items() if w == "offload"))
  return _NAMED_POLICIES[spec.remat_policy]


def checkpoint_policy(spec: RematSpec, memory_kinds: Iterable[str] | None = None) -> Callable | None:
  """The `jax.checkpoint` policy for spec.remat_policy ('full' -> None).

  Raises ValueError for 'none' (no checkpointing at all) and when the policy
  offloads to host memory that the backend does not have.
  """
  name = spec.remat_policy
  if name == "none":
    raise ValueError("remat_policy='none' means no jax.checkpoint; there is no policy")
  if name == "full":
    return None
  saved, offloaded = saved_and_offloaded(spec)
  if not offloaded:
    return jax.checkpoint_policies.save_only_these_names(*saved)
  if not host_offload_supported(memory_kinds):
    raise ValueError(
        f"remat_policy={name!r} offloads {list(offloaded)} to host memory ({OFFLOAD_MEMORY_KIND!r}), "
        f"which is not supported on this backend ({jax.default_backend()}); choose a policy without offload"
    )
  return jax.checkpoint_policies.save_and_offload_only_these_names(
      names_which_can_be_saved=list(saved),
      names_which_can_be_offloaded=list(offloaded),
      offload_src="device",
      offload_dst=OFFLOAD_MEMORY_KIND,
  )


def maybe_remat(fn: Callable, spec: RematSpec, *, prevent_cse: bool = True) -> Callable:
  """`fn` under `jax.checkpoint` with the spec's policy, or `fn` for 'none'.

  Use prevent_cse=False inside `lax.scan`, where CSE cannot defeat remat.
  """
  if spec.remat_policy == "none":
    return fn
  return jax.checkpoint(fn, policy=checkpoint_policy(spec), prevent_cse=prevent_cse)
