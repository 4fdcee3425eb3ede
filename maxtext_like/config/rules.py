"""Cross-field rules: small named functions over the flat values, each returning its problems.

A rule reads `v` (flat validated values), `d` (derived values) and, if it asks for it, `sources`. Device-dependent checks (mesh fill-in,
batch divisibility by the device count) live in `resolve.py`, which runs once devices are known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from maxtext_like.config.errors import Problem
from maxtext_like.models import choices, registry

Rule = Callable[..., Iterator[Problem]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
  RULES.append(fn)
  return fn


@rule
def positive_dimensions(v, d):
  for key in ("base_emb_dim", "base_num_query_heads", "base_num_kv_heads", "base_mlp_dim", "base_num_decoder_layers",
              "head_dim", "vocab_size", "max_target_length", "log_period", "sa_block_q", "sa_block_kv"):
    if v[key] <= 0:
      yield Problem(key, "must be positive", v[key], allowed="an integer > 0")


@rule
def query_heads_divisible_by_kv_heads(v, d):
  if d["num_kv_heads"] > 0 and d["num_query_heads"] % d["num_kv_heads"]:
    yield Problem("base_num_query_heads", f"must be a multiple of base_num_kv_heads ({v['base_num_kv_heads']}) for grouped-query attention",
                  v["base_num_query_heads"])


@rule
def mla_head_dims(v, d):
  if v["attention_type"] == "mla":
    for key in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "kv_lora_rank"):
      if v[key] <= 0:
        yield Problem(key, "must be positive when attention_type is 'mla'", v[key])


@rule
def sliding_window_fits(v, d, sources=None):
  """A window the user sets must fit the sequence; a preset's window (the real model's) may exceed a short one."""
  if (sources or {}).get("sliding_window_size", "").startswith("preset "):
    return
  if v["sliding_window_size"] > v["max_target_length"]:
    yield Problem("sliding_window_size", f"must not exceed max_target_length ({v['max_target_length']})", v["sliding_window_size"])


@rule
def experts_per_token(v, d):
  if v["num_experts_per_tok"] > v["num_experts"]:
    yield Problem("num_experts_per_tok", f"must not exceed num_experts ({v['num_experts']})", v["num_experts_per_tok"])


_MOE_DEFAULTS = {"num_experts": 1, "num_experts_per_tok": 1, "load_balance_loss_weight": 0.0, "shared_experts": 0,
                 "routed_bias": False, "n_routing_groups": -1, "first_num_dense_layers": 0,
                 "mlp_bias": False}


@rule
def moe_keys_need_moe_block(v, d):
  """MoE keys apply to families declared `moe=True` (models/registry.py); an unbuilt family is refused elsewhere."""
  moe_blocks = registry.moe_decoder_blocks()
  if v["decoder_block"] in moe_blocks or v["decoder_block"] not in registry.built_decoder_blocks():
    return
  for key, default in _MOE_DEFAULTS.items():
    if v[key] != default:
      yield Problem(key, f"is a mixture-of-experts setting, but decoder_block={v['decoder_block']!r} has no MoE layers",
                    v[key], allowed=f"{default!r}, or a MoE decoder_block ({', '.join(sorted(moe_blocks))})")


@rule
def family_keys_need_their_family(v, d):
  """A key some family declares (`Family.config_keys`) only takes effect with that family: another decoder_block
  (built) must leave it at its default."""
  from maxtext_like.config.loader import shipped_defaults  # lazy: the loader imports this module
  if v["decoder_block"] not in registry.built_decoder_blocks():
    return
  defaults = shipped_defaults()
  for key, blocks in sorted(registry.family_config_keys().items()):
    default = defaults[key]
    if v["decoder_block"] not in blocks and v[key] != default:
      yield Problem(key, f"is read only by decoder_block {', '.join(sorted(blocks))}, not by {v['decoder_block']!r}",
                    v[key], allowed=f"{default!r}, or decoder_block {', '.join(sorted(blocks))}")


@rule
def capacity_factor_needs_capacity_dispatch(v, d):
  if v["capacity_factor"] > 0 and v["sparse_matmul"]:
    yield Problem("capacity_factor", "drops tokens only with the capacity (einsum) dispatch; the dropless grouped "
                  "matmul (sparse_matmul=true) would ignore it", v["capacity_factor"],
                  allowed="<= 0, or set sparse_matmul=false")


@rule
def moe_routing_groups(v, d, sources=None):
  g, k, E = v["n_routing_groups"], v["topk_routing_group"], v["num_experts"]
  if g > 0:
    if E % g:
      yield Problem("n_routing_groups", f"must divide num_experts ({E})", g)
    elif not 0 < k <= g or k * (E // g) < v["num_experts_per_tok"]:
      yield Problem("topk_routing_group", f"must be in [1, n_routing_groups={g}] and its groups must hold at least "
                    f"num_experts_per_tok ({v['num_experts_per_tok']}) experts", k)
  if v["routed_bias_update_rate"] and not v["routed_bias"]:
    yield Problem("routed_bias_update_rate", "updates the routed bias: needs routed_bias=true", v["routed_bias_update_rate"])
  if v["routed_score_func"] not in ("", "softmax", "sigmoid"):
    yield Problem("routed_score_func", "unknown scoring function", v["routed_score_func"], allowed="'', 'softmax', 'sigmoid'")
  if v["interleave_moe_layer_step"] < 1:
    yield Problem("interleave_moe_layer_step", "must be >= 1", v["interleave_moe_layer_step"])
  elif v["scan_layers"] and (v["base_num_decoder_layers"] - v["first_num_dense_layers"]) % v["interleave_moe_layer_step"]:
    yield Problem("interleave_moe_layer_step", "the scanned layout scans units of this many layers (dense ones, then a "
                  f"MoE one), which must divide the {v['base_num_decoder_layers'] - v['first_num_dense_layers']} layers "
                  "after first_num_dense_layers", v["interleave_moe_layer_step"],
                  allowed="a divisor of that count, or set scan_layers=false")
  if v["first_num_dense_layers"] > v["base_num_decoder_layers"]:
    yield Problem("first_num_dense_layers", f"exceeds base_num_decoder_layers ({v['base_num_decoder_layers']})",
                  v["first_num_dense_layers"])


@rule
def one_checkpoint_source(v, d):
  if v["load_parameters_path"] and v["load_full_state_path"]:
    yield Problem("load_parameters_path", "cannot be combined with load_full_state_path (choose parameters only, or the full state)",
                  v["load_parameters_path"])


_FRACTIONS = ("warmup_steps_fraction", "learning_rate_final_fraction", "wsd_decay_steps_fraction", "dropout_rate",
              "sharding_tolerance")


@rule
def fractions_in_unit_interval(v, d):
  for key in _FRACTIONS:
    if not 0.0 <= v[key] <= 1.0:
      yield Problem(key, "must be a fraction", v[key], allowed="0 <= x <= 1")


@rule
def schedule_phases_fit(v, d):
  if v["lr_schedule_type"] == "wsd" and v["warmup_steps_fraction"] + v["wsd_decay_steps_fraction"] > 1.0:
    yield Problem("wsd_decay_steps_fraction", f"plus warmup_steps_fraction ({v['warmup_steps_fraction']}) must not exceed 1",
                  v["wsd_decay_steps_fraction"])


@rule
def steps_positive(v, d):
  if d["steps"] <= 0:
    yield Problem("steps", "must be positive (or -1 to use learning_rate_schedule_steps)", v["steps"])
  elif d["learning_rate_schedule_steps"] <= 0:
    yield Problem("learning_rate_schedule_steps", "must be positive (or -1 to use steps)", v["learning_rate_schedule_steps"])


@rule
def batch_size_positive(v, d):
  if v["per_device_batch_size"] <= 0:
    yield Problem("per_device_batch_size", "must be positive (fractions below 1 are allowed)", v["per_device_batch_size"])
  if v["eval_per_device_batch_size"] < 0:
    yield Problem("eval_per_device_batch_size", "must be >= 0 (0: same as per_device_batch_size)", v["eval_per_device_batch_size"])


@rule
def expansion_factor_real_data_valid(v, d):
  e = v["expansion_factor_real_data"]
  if e != -1 and (e < 1 or e != int(e)):
    yield Problem("expansion_factor_real_data", "must be -1 (every process loads data) or a whole number >= 1 that divides "
                  "the process count", e)


@rule
def prefill_shorter_than_target(v, d):
  if not 0 < v["max_prefill_predict_length"] <= v["max_target_length"]:
    yield Problem("max_prefill_predict_length", f"must be in 1..max_target_length ({v['max_target_length']})",
                  v["max_prefill_predict_length"])


@rule
def checkpoint_period_positive(v, d):
  if v["enable_checkpointing"] and v["checkpoint_period"] <= 0:
    yield Problem("checkpoint_period", "must be positive when enable_checkpointing is true", v["checkpoint_period"])


@rule
def one_fill_in_per_mesh_level(v, d):
  for level in ("ici", "dcn"):
    fills = [k for k in v if k.startswith(f"{level}_") and k.endswith("_parallelism") and v[k] == -1]
    if len(fills) > 1:
      yield Problem(fills[1], f"only one {level}_*_parallelism may be -1 (also -1: {', '.join(fills[:1] + fills[2:])})", -1)
    for k in v:
      if k.startswith(f"{level}_") and k.endswith("_parallelism") and (v[k] == 0 or v[k] < -1):
        yield Problem(k, "must be a positive size or -1 (fill from the device count)", v[k])


@rule
def logical_rules_name_mesh_axes(v, d):
  axes = set(v["mesh_axes"])
  for logical, mesh in v["logical_axis_rules"]:
    for axis in [mesh] if isinstance(mesh, str) else mesh:
      if axis not in axes:
        yield Problem("logical_axis_rules", f"rule for {logical!r} names mesh axis {axis!r}, which is not in mesh_axes", allowed=", ".join(sorted(axes)))


@rule
def sampling_parameters(v, d):
  strategy = v["decode_sampling_strategy"]
  if strategy in ("topk", "composite") and v["decode_sampling_top_k"] <= 0:
    yield Problem("decode_sampling_top_k", f"must be positive for decode_sampling_strategy={strategy!r}", v["decode_sampling_top_k"])
  if strategy in ("nucleus", "composite") and not 0 < v["decode_sampling_nucleus_p"] <= 1:
    yield Problem("decode_sampling_nucleus_p", f"must be in (0, 1] for decode_sampling_strategy={strategy!r}", v["decode_sampling_nucleus_p"])
  if strategy != "greedy" and v["decode_sampling_temperature"] <= 0:
    yield Problem("decode_sampling_temperature", "must be positive for sampling", v["decode_sampling_temperature"])


@rule
def mlp_activations_known(v, d):
  known = {"silu", "gelu", "gelu_exact", "relu", "linear", "sigmoid", "tanh", "swish", "quick_gelu"}
  acts = v["mlp_activations"]
  if not acts:
    yield Problem("mlp_activations", "must name at least one activation", acts)
  for a in acts:
    if a not in known:
      yield Problem("mlp_activations", f"has unknown activation {a!r}", acts, allowed=", ".join(sorted(known)))


@rule
def num_slices_valid(v, d):
  if v["num_slices"] == 0 or v["num_slices"] < -1:
    yield Problem("num_slices", "must be -1 (detect) or a positive number", v["num_slices"])


@rule
def data_sources_named(v, d):
  t = v["dataset_type"]
  if t == "hf" and not v["hf_path"]:
    yield Problem("hf_path", "is required when dataset_type is 'hf'", v["hf_path"])
  if t == "grain" and not v["grain_train_files"] and not v["grain_train_mixture_config_path"]:
    yield Problem("grain_train_files", "is required when dataset_type is 'grain' (or set grain_train_mixture_config_path)",
                  v["grain_train_files"])


@rule
def eval_data_named(v, d):
  """Periodic eval needs eval data; found at config time rather than at the first eval, mid-run."""
  if v["eval_interval"] <= 0:
    return
  t = v["dataset_type"]
  if t == "hf" and not v["hf_eval_split"] and not v["hf_eval_files"]:
    yield Problem("hf_eval_split", "or hf_eval_files is required for eval (eval_interval > 0) with dataset_type 'hf'", v["hf_eval_split"])
  if t == "grain" and not v["grain_eval_files"]:
    yield Problem("grain_eval_files", "is required for eval (eval_interval > 0) with dataset_type 'grain'", v["grain_eval_files"])


@rule
def single_data_column(v, d):
  """Pretraining reads one text (or token-id) column; several columns are SFT/DPO record formats."""
  if v["use_sft"] or v["use_dpo"]:
    return
  for key in ("train_data_columns", "eval_data_columns"):
    if len(v[key]) != 1:
      yield Problem(key, "must name exactly one column (the document text, or its token ids); several columns are "
                         "for use_sft / use_dpo", v[key])


# dataset_type values whose rows SFT and DPO read as records (data/conversations.py).
FINETUNE_DATASET_TYPES = ("embedded", "hf")


@rule
def finetune_data(v, d, sources=None):
  """SFT / DPO: one of the two, their record columns, a source that reads records, and DPO without packing."""
  if not (v["use_sft"] or v["use_dpo"]):
    return
  if v["use_sft"] and v["use_dpo"]:
    yield Problem("use_dpo", "and use_sft cannot both be true (DPO trains on preference pairs, SFT on conversations)", True)
    return
  kind = "use_dpo" if v["use_dpo"] else "use_sft"
  counts = (2, 3) if v["use_dpo"] else (1, 2, 3)
  embedded_default = lambda key: v["dataset_type"] == "embedded" and sources is not None and \
      str(sources.get(key, "")).split(":")[0].endswith("base.yml")
  for key in ("train_data_columns", "eval_data_columns"):
    if len(v[key]) not in counts and not embedded_default(key):
      allowed = ("[chosen, rejected] or [prompt, chosen, rejected]" if v["use_dpo"] else
                 "[messages], [prompt, completion] (or [question, answer]), or [instruction, input, output]")
      yield Problem(key, f"names the record columns of {kind}: {allowed}", v[key], allowed=allowed)
  if v["dataset_type"] not in FINETUNE_DATASET_TYPES:
    yield Problem("dataset_type", f"{kind} reads records from {' or '.join(FINETUNE_DATASET_TYPES)} (local JSON/Parquet "
                                  "files through dataset_type=hf hf_path=json hf_train_files=...)", v["dataset_type"],
                  allowed=list(FINETUNE_DATASET_TYPES))
  if v["hf_streaming"]:
    yield Problem("hf_streaming", f"is not supported with {kind} yet", True)
  if not v["tokenize_train_data"]:
    yield Problem("tokenize_train_data", f"must be true with {kind} (records are rendered and tokenized)", False)
  if v["use_dpo"] and v["packing"]:
    yield Problem("packing", "must be false with use_dpo: a row holds one (chosen, rejected) pair, whose log-probabilities "
                             "are sums over one sequence (MaxText refuses DPO packing too)", True, allowed="false")
  if v["use_dpo"] and not 0 <= v["dpo_label_smoothing"] < 0.5:
    yield Problem("dpo_label_smoothing", "must be in [0, 0.5)", v["dpo_label_smoothing"])
  if v["use_dpo"] and v["dpo_beta"] <= 0:
    yield Problem("dpo_beta", "must be > 0", v["dpo_beta"])
  if v["use_dpo"] and v["dpo_algo"] == "orpo" and v["orpo_lambda"] < 0:
    yield Problem("orpo_lambda", "must be >= 0", v["orpo_lambda"])
  if v["use_dpo"] and v["expansion_factor_real_data"] not in (-1, 1):
    yield Problem("expansion_factor_real_data", "is not supported with use_dpo (placeholder rows hold no pairs)",
                  v["expansion_factor_real_data"], allowed="-1")


@rule
def segments_limit_needs_bin_packing(v, d):
  if v["max_segments_per_seq"] > 0 and v["packing"] and v["grain_packing_type"] == "concat_then_split":
    yield Problem("max_segments_per_seq", "needs grain_packing_type 'first_fit' or 'best_fit' (concat_then_split cannot limit segments)",
                  v["max_segments_per_seq"])
  if v["max_segments_per_seq"] == 0 or v["max_segments_per_seq"] < -1:
    yield Problem("max_segments_per_seq", "must be -1 (no limit) or >= 1", v["max_segments_per_seq"])


@rule
def grain_loader_sizes(v, d):
  for key in ("grain_worker_count", "grain_worker_count_eval"):
    if v[key] < 0:
      yield Problem(key, "must be >= 0 (0: no worker processes); -1 (autotune) is not supported yet", v[key])
  for key in ("grain_num_threads", "grain_num_threads_eval", "grain_prefetch_buffer_size", "grain_prefetch_buffer_size_eval",
              "grain_per_worker_buffer_size", "grain_per_worker_buffer_size_eval"):
    if v[key] < 1:
      yield Problem(key, "must be >= 1", v[key])


@rule
def padding_eval_needs_eval_steps(v, d):
  """Padding batches never end, so an eval over them needs a step count."""
  if v["generate_padding_batch_eval"] and v["eval_interval"] > 0 and v["eval_steps"] <= 0:
    yield Problem("generate_padding_batch_eval", "needs eval_steps > 0 (padding batches never run out)", True)


def context_shards(v) -> int | None:
  """ici × dcn context parallelism, or None while one of them is -1 (filled from devices in resolve.py)."""
  ici, dcn = v["ici_context_parallelism"], v["dcn_context_parallelism"]
  return ici * dcn if ici > 0 and dcn > 0 else None


@rule
def context_load_balance_fits_length(v, d, num_shards=None):
  """Load-balanced context parallelism cuts each sequence into equal parts: 2 × shards of them for dual_chunk_swap
  ('auto'), one token per shard in turn for striped (models/load_balance.py::required_divisor)."""
  C = num_shards or context_shards(v)
  if not C or C == 1 or not v["context_parallel_load_balance"]:
    return
  strategy = v["context_parallel_reorder_strategy"]
  divisor = C if strategy == "striped" else 2 * C
  if v["max_target_length"] % divisor:
    yield Problem("max_target_length", f"must be a multiple of {divisor} for load-balanced context parallelism over {C} "
                  f"context shards (context_parallel_reorder_strategy={strategy}); change it or set "
                  "context_parallel_load_balance=false", v["max_target_length"])


def pipeline_stages(v) -> int | None:
  """ici × dcn pipeline parallelism, or None while one of them is -1 (filled from devices in resolve.py)."""
  ici, dcn = v["ici_pipeline_parallelism"], v["dcn_pipeline_parallelism"]
  return ici * dcn if ici > 0 and dcn > 0 else None


@rule
def pipeline_layers_fit_stages(v, d, num_stages=None):
  """num_decoder_layers = stages × num_layers_per_pipeline_stage × num_pipeline_repeats (-1: derived from it)."""
  S = num_stages or pipeline_stages(v)
  if not S or S == 1:
    return
  L, P, R = d["num_decoder_layers"], v["num_layers_per_pipeline_stage"], v["num_pipeline_repeats"]
  if P < 1:
    yield Problem("num_layers_per_pipeline_stage", "must be >= 1", P)
  elif R == -1 and L % (S * P):
    yield Problem("num_layers_per_pipeline_stage", f"times the number of pipeline stages ({S}) must divide "
                  f"num_decoder_layers ({L})", P, allowed=", ".join(str(p) for p in range(1, L + 1) if L % (S * p) == 0) or "none")
  elif R != -1 and (R < 1 or S * P * R != L):
    yield Problem("num_pipeline_repeats", f"times stages ({S}) times num_layers_per_pipeline_stage ({P}) must equal "
                  f"num_decoder_layers ({L})", R, allowed=f"-1 or {L // (S * P)}" if L % (S * P) == 0 else "-1")


@rule
def pipeline_microbatches_fit_stages(v, d, num_stages=None):
  """num_pipeline_microbatches (-1: stages, 2 × stages with delayed forwarding) is a multiple of the stages."""
  S = num_stages or pipeline_stages(v)
  M = v["num_pipeline_microbatches"]
  if not S or S == 1 or M == -1:
    return
  if M < 1 or M % S:
    yield Problem("num_pipeline_microbatches", f"must be a positive multiple of the number of pipeline stages ({S})", M,
                  allowed=f"-1, {S}, {2 * S}, ...")
  elif v["pipeline_delay_activation_forwarding"] and M < 2 * S:
    yield Problem("num_pipeline_microbatches", f"must be at least 2 × stages ({2 * S}) with "
                  "pipeline_delay_activation_forwarding=true", M, allowed=f"-1, {2 * S}, {3 * S}, ...")


@rule
def pipeline_blocks_supported(v, d):
  """Pipelined layers must be one stack of dense layers (MoE auxiliary losses and several stacks are not built)."""
  if (v["ici_pipeline_parallelism"] != 1 or v["dcn_pipeline_parallelism"] != 1) and v["decoder_block"] in registry.moe_decoder_blocks():
    yield Problem("ici_pipeline_parallelism", f"pipeline parallelism is not supported yet for mixture-of-experts "
                  f"decoder_block={v['decoder_block']!r}", v["ici_pipeline_parallelism"], allowed="1")


@rule
def quantization_runs_here(v, d):
  """Values that need other hardware (or are not built) are refused with the reason, never run in float."""
  q = v["quantization"] or ""
  if q in choices.QUANTIZATION_REFUSED:
    yield Problem("quantization", f"is refused: {choices.QUANTIZATION_REFUSED[q]}", q,
                  allowed="'', " + ", ".join(repr(x) for x in choices.QUANTIZATION_QWIX))


@rule
def quantization_inputs(v, d):
  """intmp reads its table at config time (a bad file is bad input, not a crash later); quantized checkpoints
  need a scheme to read or write."""
  q = v["quantization"] or ""
  if q == "intmp":
    if not v["quant_cfg_path"]:
      yield Problem("quant_cfg_path", "must name a JSON table when quantization=intmp", "",
                    allowed="a file like {\".*/wi_0\": {\"w_bits\": 4}, \"__default__\": {\"w_bits\": 8}}")
    else:
      from maxtext_like.models.quantization import QuantConfigError, intmp_rules
      try:
        intmp_rules(v["quant_cfg_path"])
      except QuantConfigError as e:
        yield Problem("quant_cfg_path", str(e), v["quant_cfg_path"], allowed="a readable JSON mixed-precision table")
  if v["checkpoint_is_quantized"]:
    if not q:
      yield Problem("checkpoint_is_quantized", "needs the scheme the checkpoint was quantized with", True,
                    allowed="set quantization= as when it was written (e.g. int8w)")
    if not v["load_parameters_path"]:
      yield Problem("checkpoint_is_quantized", "needs load_parameters_path (the quantized checkpoint)", True,
                    allowed="load_parameters_path=<dir written by `python -m maxtext_like.convert quantize`>")
  if v["save_quantized_params_path"] and not q:
    yield Problem("save_quantized_params_path", "needs a quantization scheme to quantize with",
                  v["save_quantized_params_path"], allowed="quantization=int8, int8w, int4, int4w, fp8 or intmp")


@rule
def kv_quant_axis_named(v, d):
  """A quantized KV cache needs the axes its scales reduce over (MaxText refuses '' too)."""
  if v["quantize_kvcache"] and not v["kv_quant_axis"]:
    yield Problem("kv_quant_axis", "must name the axes to quantize over when quantize_kvcache=true", "",
                  allowed="'dkv' (a scale per token per kv head) or 'heads_and_dkv' (a scale per token)")


_CALIBRATIONS = {"absmax": (0, 1), "minmax": (0, 1), "rms": (1, 1), "fixed": (2, 2)}  # method -> (min, max) arguments


@rule
def quantization_calibration_methods(v, d):
  """qwix's calibration syntax: '<method>[,<args>]' (absmax[,s], minmax[,s], rms,s, fixed,lo,hi)."""
  for key in ("weight_quantization_calibration_method", "act_quantization_calibration_method",
              "bwd_quantization_calibration_method"):
    method, *args = str(v[key]).split(",")
    lo_hi = _CALIBRATIONS.get(method.strip())
    try:
      numbers_ok = all(float(a) == float(a) for a in args)
    except ValueError:
      numbers_ok = False
    if lo_hi is None or not lo_hi[0] <= len(args) <= lo_hi[1] or not numbers_ok:
      yield Problem(key, "is not a qwix calibration method", v[key],
                    allowed="absmax, absmax,<scale>, minmax, minmax,<scale>, rms,<scale>, fixed,<min>,<max>")


@rule
def lora_keys(v, d):
  """LoRA needs a rank; its other keys mean nothing without enable_lora; QAT and pipelining are not combined with it."""
  import re
  if v["enable_lora"] and v["lora_rank"] <= 0:
    yield Problem("lora_rank", "must be > 0 when enable_lora=true", v["lora_rank"], allowed="an integer > 0 (e.g. 8)")
  for key in ("lora_weight_qtype", "lora_tile_size", "lora_restore_path", "hf_lora_adapter_path"):
    if v[key] and not v["enable_lora"]:
      yield Problem(key, "applies to LoRA training only; set enable_lora=true (or leave it unset)", v[key])
  if v["lora_weight_qtype"] and v["lora_weight_qtype"] not in choices.LORA_WEIGHT_QTYPES:
    yield Problem("lora_weight_qtype", "is not a QLoRA base type", v["lora_weight_qtype"],
                  allowed="null, " + ", ".join(choices.LORA_WEIGHT_QTYPES))
  if v["lora_tile_size"] is not None and v["lora_tile_size"] <= 0:
    yield Problem("lora_tile_size", "must be a positive tile size or null", v["lora_tile_size"], allowed="null, 32, 64, ...")
  if v["lora_restore_path"] and v["hf_lora_adapter_path"]:
    yield Problem("hf_lora_adapter_path", "and lora_restore_path both name a starting adapter; set one",
                  v["hf_lora_adapter_path"])
  if v["enable_lora"] and v["quantization"]:
    yield Problem("quantization", "quantized training (QAT) and LoRA are not combined; for a quantized frozen base "
                  "use lora_weight_qtype (QLoRA)", v["quantization"], allowed="''")
  if v["enable_lora"] and (v["ici_pipeline_parallelism"] != 1 or v["dcn_pipeline_parallelism"] != 1):
    yield Problem("ici_pipeline_parallelism", "LoRA with pipeline parallelism is not supported yet",
                  v["ici_pipeline_parallelism"], allowed="1")
  if v["enable_lora"] and v["use_dpo"]:
    yield Problem("use_dpo", "DPO with LoRA adapters is not supported yet (the reference would be the frozen base)",
                  v["use_dpo"], allowed="false with enable_lora=true")
  for key in ("parameter_memory_host_offload", "optimizer_memory_host_offload"):
    if v["enable_lora"] and v[key]:
      yield Problem(key, "is not supported with LoRA yet (its adapters and their optimizer state are small)", v[key],
                    allowed="false with enable_lora=true")
  if v["enable_lora"] and v["lora_input_adapters_path"]:
    yield Problem("lora_input_adapters_path", "serves an adapter (decode, api); to train from one use "
                  "lora_restore_path or hf_lora_adapter_path", v["lora_input_adapters_path"])
  try:
    re.compile(v["lora_module_path"] or "")
  except re.error as e:
    yield Problem("lora_module_path", f"is not a regular expression ({e})", v["lora_module_path"])


@rule
def profiler_windows(v, d):
  """profiler=xplane traces profiler_steps steps, again every profile_periodically_period steps: windows must not overlap."""
  if v["profiler"] == "xplane" and v["profiler_steps"] < 1:
    yield Problem("profiler_steps", "must be at least 1 with profiler=xplane", v["profiler_steps"])
  if v["profiler"] == "xplane" and 0 < v["profile_periodically_period"] < v["profiler_steps"]:
    yield Problem("profile_periodically_period", f"must be at least profiler_steps ({v['profiler_steps']}): each "
                  "profile covers profiler_steps steps", v["profile_periodically_period"])
  if v["profiler"] == "nsys":
    yield Problem("profiler", "is refused: NVIDIA Nsight Systems tracing needs an NVIDIA GPU and the nsys tool "
                  "(neither is here); profiler=xplane traces every platform and opens in TensorBoard's profile plugin "
                  "and Perfetto", "nsys", allowed="'' or 'xplane'")
  if v["enable_jax_profiler"] and not 0 < v["jax_profiler_port"] < 65536:
    yield Problem("jax_profiler_port", "must be a TCP port (1..65535) with enable_jax_profiler", v["jax_profiler_port"])


@rule
def emergency_checkpoint_keys(v, d):
  """enable_emergency_checkpoint runs orbax's emergency manager here; MaxText's multi-tier checkpointing needs a
  service this platform does not have."""
  if v["enable_emergency_checkpoint"]:
    if not v["local_checkpoint_directory"]:
      yield Problem("local_checkpoint_directory", "is required with enable_emergency_checkpoint", "")
    if v["local_checkpoint_period"] < 1:
      yield Problem("local_checkpoint_period", "must be at least 1 with enable_emergency_checkpoint",
                    v["local_checkpoint_period"])
  for key in ("enable_multi_tier_checkpointing", "use_replicator_service"):
    if v[key]:
      yield Problem(key, "needs GKE's multi-tier checkpointing replicator service: orbax hands it replicator.yaml in "
                    "local_checkpoint_directory and waits for the service to take it, and there is none here; "
                    "enable_emergency_checkpoint=true gives local and persistent tiers through orbax's emergency "
                    "CheckpointManager instead", True)


@rule
def internal_nn_metrics_need_lm_batches(v, d):
  if v["record_internal_nn_metrics"] and v["use_dpo"]:
    yield Problem("record_internal_nn_metrics", "runs the language-model loss on the logged batch; DPO batches hold "
                  "preference pairs, so it is not built for use_dpo", v["record_internal_nn_metrics"])


@rule
def safetensors_source_is_parameters(v, d):
  """source_checkpoint_layout=safetensors reads a Hugging Face directory: parameters only, for a full model."""
  if v["source_checkpoint_layout"] != "safetensors":
    return
  if not v["load_parameters_path"] or v["load_full_state_path"]:
    yield Problem("source_checkpoint_layout", "'safetensors' reads parameters from a Hugging Face directory named by "
                  "load_parameters_path (it holds no optimizer state, so not load_full_state_path)", "safetensors")
  if v["enable_lora"]:
    yield Problem("source_checkpoint_layout", "'safetensors' is not built for LoRA's frozen base yet; convert the "
                  "base with `python -m maxtext_like.convert to_maxtext` and load that", "safetensors")


def check(v: Mapping[str, Any], d: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> list[Problem]:
  """Every rule's problems, in rule order."""
  out = []
  for r in RULES:
    out.extend(r(v, d, sources) if "sources" in r.__code__.co_varnames else r(v, d))
  return out
