"""Keys whose feature is not built yet. Such a key accepts its base.yml default; any other value is refused
with "not supported yet". This list shrinks as features land; nothing is ever silently ignored.

Presets may set architecture keys of families that are not built yet (the model registry refuses the family
itself), so preset-supplied values are exempt; CLI and environment values are not.
"""

from __future__ import annotations

from maxtext_like.models import choices, registry

# key -> the values that are supported (None: only the default). Keys absent from both maps are fully supported.
PARTIAL: dict[str, frozenset] = {
    "attention": frozenset(choices.ATTENTION_VALUES),
    "dataset_type": frozenset({"embedded", "synthetic", "hf", "grain", "tfds"}),
    "grain_file_type": frozenset({"arrayrecord", "parquet"}),
    "hardware": frozenset({"auto", "cpu", "gpu", "gpu_multiprocess", "tpu"}),
    "rope_type": frozenset(choices.ROPE_TYPES),
    "attention_type": frozenset(choices.ATTENTION_TYPES),
    "profiler": frozenset({"", "xplane", "nsys"}),  # nsys: refused with its reason (config/rules.py)
    "decoder_block": registry.built_decoder_blocks(),  # one module per family in models/families/
}

UNSUPPORTED: frozenset[str] = frozenset({
    # run
    "sharding_strategy",
    # checkpointing (built, training/checkpointing.py: checkpoint_storage_*, enable_single_replica_ckpt_restoring,
    #  enable_continuous_checkpointing; load_checkpoint_only_once: the checkpoint is always read once)
    "checkpoint_todelete_subdir", "checkpoint_todelete_full_path", "enable_orbax_v1",
    "checkpoint_conversion_fn",
    "colocated_python_checkpointing", "enable_autocheckpoint",
    # (training/emergency.py: enable_emergency_checkpoint, local_checkpoint_directory, local_checkpoint_period;
    #  enable_multi_tier_checkpointing and use_replicator_service are refused with their reason in config/rules.py)
    "multi_tier_checkpointing_backup_interval_minutes", "mtc_data_parallelism", "replicator_backup_interval_minutes",
    # dtypes
    "grad_dtype", "activations_in_float32", "dtype_mm",
    # quantization
    # (built, models/quantization.py: quantization (values refused with their reason in config/rules.py),
    #  use_qwix_quantization, quantization_local_shard_count, *_quantization_calibration_method;
    #  models/kv_cache.py: quantize_kvcache, kv_quant_axis, kv_quant_dtype)
    "use_manual_quantization", "weight_sparsity_n", "weight_sparsity_m", "weight_sparsity_update_step",
    "weight_sparsity_start_step",
    # model
    "attention_output_dim", "global_head_dim", "fused_mlp",
    "qk_norm_with_scale", "v_norm_with_scale", "mtp_num_layers", "mtp_loss_scaling_factor", "mtp_eval_target_module",
    "normalize_embedding_logits", "mhc_expansion_rate", "sinkhorn_iterations", "engram_layers", "engram_num_heads",
    "engram_head_dim", "engram_vocab_bases", "engram_max_ngram_size", "engram_kernel_size", "engram_seed",
    # attention
    "share_kv_projections", "global_num_kv_heads",
    "use_ragged_attention", "ragged_block_size",
    "enable_padding_causal_mask", "force_q_layout", "use_qk_clip",
    "qk_clip_threshold", "moba", "moba_chunk_size", "moba_topk", "use_indexer", "indexer_head_dim", "indexer_n_heads",
    "indexer_topk", "indexer_sparse_training", "indexer_loss_scaling_factor",
    "sa_block_kv_compute", "sa_block_q_dkv", "sa_block_kv_dkv",
    "sa_block_kv_dkv_compute", "sa_block_q_dq", "sa_block_kv_dq", "sa_use_fused_bwd_kernel", "sa_q_layout",
    "sa_k_layout", "sa_v_layout", "use_max_logit_estimate", "cost_estimate_flops_fwd", "cost_estimate_flops_bwd",
    "dq_reduction_steps", "use_splash_scheduler",
    # moe
    # (built, models/moe.py: num_experts, num_experts_per_tok, capacity_factor, base_moe_mlp_dim,
    #  load_balance_loss_weight, use_random_routing, norm_topk_prob, float32_weight_sum, float32_gate_logits,
    #  megablox (falls back to ragged_dot), sparse_matmul, first_num_dense_layers, shared_experts, routed_*,
    #  n_routing_groups, topk_routing_group, interleave_moe_layer_step (scan_layers=false))
    "ragged_buffer_factor", "moe_expert_input_dim",
    "padded_base_moe_mlp_dim", "use_custom_sort_vjp",
    "use_ring_of_experts", "use_gather_mosaic_kernel",
    "moe_fsdp_use_two_stage_all_gather", "shard_exp_on_fsdp", "use_2d_fsdp_sharding",
    "prefuse_moe_weights",
    "wi_tile_fwd_batch_seq", "wi_tile_fwd_embed_dim", "wi_tile_fwd_mlp_dim", "wi_tile_dlhs_batch_seq",
    "wi_tile_dlhs_embed_dim", "wi_tile_dlhs_mlp_dim", "wi_tile_drhs_batch_seq", "wi_tile_drhs_embed_dim",
    "wi_tile_drhs_mlp_dim", "wo_tile_fwd_batch_seq", "wo_tile_fwd_embed_dim", "wo_tile_fwd_mlp_dim",
    "wo_tile_dlhs_batch_seq", "wo_tile_dlhs_embed_dim", "wo_tile_dlhs_mlp_dim", "wo_tile_drhs_batch_seq",
    "wo_tile_drhs_embed_dim", "wo_tile_drhs_mlp_dim", "merge_gating_gmm", "use_batch_split_schedule", "batch_split_factor", "gdn_conv_kernel_dim",
    "gdn_key_head_dim", "gdn_value_head_dim", "gdn_num_key_heads", "gdn_num_value_heads", "gdn_chunk_size",
    "use_qk_norm_in_gdn", "partial_rotary_factor",
    # mesh
    "inhomogeneous_layer_cycle_interval", "context_parallel_strategy",
    "custom_mesh", "custom_mesh_and_rule", "allow_split_physical_axes",
    "enable_nnx", "optimize_mesh_for_tpu_v6e", "shardy", "pure_nnx_decoder", "pure_nnx",
    "remove_size_one_mesh_axis_from_type", "context_sharding", "input_data_sharding_logical_axes",
    "shard_optimizer_over_data", "internal_compile", "internal_compile_num_devices",
    "compile_xla_flags",
    # dcn
    "dcn_diloco_parallelism",
   
    # ici
    "ici_diloco_parallelism",
   
    # pipeline (built, models/pipeline.py: ici/dcn_pipeline_parallelism, num_pipeline_microbatches,
    #  num_layers_per_pipeline_stage, num_pipeline_repeats, pipeline_delay_activation_forwarding, pipeline_fsdp_ag_once,
    #  scan_pipeline_iterations, scan_layers_per_stage, set_remat_policy_on_pipeline_iterations/_on_layers_per_stage)
    "pipeline_fsdp_ag_per_repeat", "pipeline_parallel_layers", "scan_pipeline_repeats",
    # remat
    "remat_policy_for_vit", "moe_mlpwi_0", "moe_mlpwi_1", "moe_mlpwo", "query_wa_proj", "kv_wa_proj", "mla_q",
    "mla_kv", "attention_out", "engram",
    # tokenizer
    "num_vocab_tiling",  # (built, serving/chat.py: chat_template, chat_template_path, use_chat_template for decode and SFT/DPO)
    # dataset
    "max_corpus_chars", "train_image_column", "eval_image_column",
    "enable_rampup_batch_size", "per_device_batch_size_start", "per_device_batch_size_increment", "global_rampup_samples",
    "colocated_python_data_input", "grain_use_elastic_iterator", "grain_ram_budget_mb", "grain_data_source_max_workers",
    "olmo_index_path", "olmo_path_remap_from", "olmo_path_remap_to", "olmo_apply_ngram_filter",
    # finetune
    # (built, data/conversations.py + training/dpo.py: use_sft, sft_train_on_completion_only, use_dpo, dpo_beta,
    #  dpo_label_smoothing, dpo_algo, orpo_lambda)
    "formatting_func_path", "max_prompt_length",
    "formatting_func_kwargs", "use_grpo", "student_overrides", "teacher_overrides", "offline_data_dir",
    "distill_alpha", "distill_temperature", "distill_beta", "distill_feature_loss_type", "distill_layer_indices",
    "distill_alpha_end", "distill_alpha_schedule", "distill_temperature_end", "distill_temperature_schedule",
    "distill_beta_end", "distill_beta_schedule", "learn_to_init_mode", "lti_use_general_linear_map",
    "distill_weights_copy_map", "distill_student_weights_share_map", "student_params_to_update",
    # training
    "enable_diloco", "diloco_sync_period", "diloco_outer_lr", "diloco_outer_momentum", "elastic_enabled",
    "elastic_timeout_seconds", "elastic_max_retries", "elastic_min_slice_count",
    # optimizer
    "use_tunix_gradient_accumulation",
    # rope
    "use_untrainable_positional_embedding",
    "global_rope_proportion",
    "local_rope_proportion",
    # inference
    "load_from_prefill_dir", "prefill_cache_dir", "autoregressive_decode_assert", "model_call_mode",
    "enable_model_warmup", "enable_llm_inference_pool",
    "stack_prefill_result_cache", "prefill_cache_axis_order", "ar_cache_axis_order",
    "compute_axis_order", "reshape_q", "inference_server", "prefill_slice", "generate_slice",
    "inference_metadata_file", "inference_benchmark_test",
    # aot (built, training/topologies.py: compile_topology through libtpu)
    # debug
    "constant_bound_config", "jax_cache_dir", "jax_debug_log_modules",
    "enable_single_controller", "subslice_shape", "max_checkify",
    "enable_tpu_profiling_options", "tpu_num_chips_to_profile_per_task", "tpu_num_sparse_cores_to_trace",
    "tpu_num_sparse_core_tiles_to_trace", "xprof_tpu_power_trace_level", "xprof_e2e_enable_fw_throttle_event",
    "xprof_e2e_enable_fw_power_level_event", "xprof_e2e_enable_fw_thermal_event", "profile_power_events",
    # (built, training/profiling.py: profiler=xplane windows, enable_jax_profiler, dump_hlo*, dump_jaxpr*; the GCS
    #  upload keys below stay at their defaults: dumps and profiles are local)
    "dump_hlo_delete_local_after", "dump_hlo_gcs_dir", "dump_hlo_upload_all",
    "dump_jaxpr_delete_local_after", "dump_jaxpr_gcs_dir", "collect_stack_trace", "stack_trace_to_cloud",
    "stack_trace_interval_seconds", "rl",
    # metrics
    # (built, serving/metrics.py: prometheus_port; training/nn_metrics.py: record_internal_nn_metrics)
    "gcs_metrics", "save_config_to_gcs",
    "enable_checkpoint_cloud_logger", "enable_tunix_perf_metrics", "managed_mldiagnostics",
    "managed_mldiagnostics_run_group",
    # (built, training/goodput.py: enable_goodput_recording, monitor_goodput, goodput_upload_interval_seconds,
    #  monitor_step_time_deviation, step_deviation_interval_seconds)
    "enable_pathways_goodput", "enable_gcp_goodput_metrics", "enable_gcp_step_deviation_metrics",
    "report_heartbeat_metric_for_gcp_monitoring", "heartbeat_reporting_interval_in_seconds",
    "report_performance_metric_for_gcp_monitoring", "use_vertex_tensorboard", "vertex_tensorboard_project",
    "vertex_tensorboard_region",
    # multimodal
    "use_multimodal", "freeze_vision_encoder_params", "freeze_audio_encoder_params", "use_audio",
    "image_size_for_vit", "image_path", "image_placeholder", "posemb_type_for_vit", "max_num_images_per_example",
    "video_path", "audio_path", "video_placeholder", "audio_placeholder", "use_audio_in_video", "use_mrope",
    "mrope_section", "position_id_per_seconds", "hidden_size_for_vit", "intermediate_size_for_vit",
    "num_attention_heads_for_vit", "num_channels_for_vit", "tile_size_for_vit", "patch_size_for_vit",
    "conv_stride_for_vit", "num_hidden_layers_for_vit", "rope_theta_for_vit", "vision_output_dim_for_vit",
    "spatial_merge_size_for_vit", "out_hidden_size_for_vit", "temporal_patch_size_for_vit",
    "num_position_embeddings_for_vit", "deepstack_visual_indexes_for_vit", "vision_output_length",
    "projector_input_dim_for_vit", "projector_output_dim_for_vit", "pixel_shuffle_ratio_for_vit",
    "projector_dropout_for_vit", "d_model_for_audio", "encoder_attention_heads_for_audio",
    "encoder_ffn_dim_for_audio", "encoder_layers_for_audio", "attention_dropout_for_audio",
    "activation_dropout_for_audio", "activation_function_for_audio", "num_mel_bins_for_audio",
    "max_source_positions_for_audio", "scale_embedding_for_audio", "n_window_for_audio", "n_window_infer_for_audio",
    "conv_chunksize_for_audio", "downsample_hidden_size_for_audio", "output_dim_for_audio",
    "num_conv_layers_for_audio", "max_timescale_for_audio", "max_sample_len_for_audio",
    # rl
    "trainer_devices_fraction", "sampler_devices_fraction", "chips_per_vm", "use_pathways", "num_trainer_slices",
    "num_samplers_slices", "rollout_data_parallelism", "rollout_tensor_parallelism", "rollout_expert_parallelism",
    "kv_cache_buffer", "hbm_utilization_vllm", "swap_space_vllm_gb", "enable_dp_attention", "enable_expert_parallel",
    "async_scheduling", "max_num_batched_tokens", "max_num_seqs", "stop_strings", "vllm_additional_config",
    "vllm_hf_overrides", "vllm_hf_config_path", "use_standalone_converter", "vllm_load_format", "debug_converter",
    "gcs_debug_path", "num_generations", "num_iterations", "grpo_beta", "grpo_epsilon", "loss_algo",
    "use_agentic_rollout", "max_concurrency", "off_policy_steps", "system_prompt", "degenerate_group_masking",
    "epsilon_high", "reshard_chunk_size", "batch_size", "num_batches", "num_test_batches", "test_batch_start_index",
    "train_fraction", "train_micro_batch_size", "rollout_micro_batch_size", "eval_sampling_strategy",
    "generation_configs", "num_eval_passes", "eval_corr_lst", "eval_make_lst", "eval_mode", "reward_exact_answer",
    "reward_exact_format_match", "reward_white_space_format_match", "reward_partial_format_match",
    "reward_ratio_guess_to_answer_high", "reward_ratio_guess_to_answer_low", "penalty_incorrect_format",
    "penalty_incorrect_answer", "math_verify_timeout", "math_verify_num_procs", "reasoning_start_token",
    "reasoning_end_token", "solution_start_token", "solution_end_token",
})
