"""Decoding, serving and inference benchmarks."""

from typing import Any, Literal

from maxtext_like.config.sections._base import F, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class InferenceSection(Section):
  """Decoding, serving and inference benchmarks. (MaxText: InferenceGeneral, Decoding, InferenceLayout, InferenceServer, InferenceBenchmark, PrefixCaching.)"""

  section_name = "inference"

  max_target_length: int = F('Maximum sequence length for the model.')
  max_prefill_predict_length: int = F('Maximum length for the prefill stage in decoding.')
  prompt: str = F('The default prompt for sampling.')
  load_from_prefill_dir: bool = F('Reads prefill cache from directory instead of computing it.')
  prefill_cache_dir: str = F('Directory for the prefill cache.')
  autoregressive_decode_assert: str = F('Value to assert against during autoregressive decoding, for testing.')
  model_call_mode: str = F("Mode for model call, e.g., 'inference'.")
  use_chunked_prefill: bool = F('Use chunked prefilling for long sequences.')
  prefill_chunk_size: int = F('The chunk size for chunked prefilling.')
  enable_model_warmup: bool = F('Run a warmup cycle before starting the server.')
  enable_llm_inference_pool: bool = F('Launch inference server for llm_inference_gateway.')
  multi_sampling: bool = F('Enable multiple sampling configurations.')
  return_log_prob: bool = F('Return log probabilities during inference.')
  decode_sampling_strategy: Literal['greedy', 'weighted', 'nucleus', 'topk', 'composite'] = F('The strategy for decoding.')
  decode_sampling_nucleus_p: int | float = F('Nucleus (top-p) sampling probability. -1 to disable.')
  decode_sampling_top_k: int = F('Top-k sampling value. 0 to disable.')
  decode_sampling_temperature: float = F('Sampling temperature.')
  stack_prefill_result_cache: bool = F('Stack prefill cache across layers to reduce latency.')
  prefill_cache_axis_order: str = F('Axis order for the prefill KV cache.')
  ar_cache_axis_order: str = F('Axis order for the autoregressive KV cache.')
  compute_axis_order: str = F('Axis order for compute operations.')
  reshape_q: bool = F('Reshape Q tensor in attention.')
  inference_server: str = F('Inference server to start.')
  prefill_slice: str = F('Slice to use for prefill in disaggregation mode.')
  generate_slice: str = F('Slice to use for generatation in disaggregation mode.')
  inference_microbenchmark_prefill_lengths: str = F('Prefill lengths to benchmark.')
  inference_microbenchmark_stages: str = F('Stages to benchmark.')
  inference_microbenchmark_loop_iters: int = F('Number of iterations for the benchmark loop.')
  inference_microbenchmark_log_file_path: str = F('Path to log benchmark results.')
  inference_microbenchmark_num_samples: list[int] = F('Number of samples to benchmark.')
  inference_metadata_file: str = F('Path to a JSON file with inference metadata.')
  inference_benchmark_test: bool = F('Flag to indicate a benchmark test run.')
  enable_prefix_caching: bool = F('Enable prefix caching.')
  prefix_caching_hbm_byte: int = F('HBM memory allocation for prefix caching in bytes.')
  prefix_caching_dram_byte: int = F('DRAM memory allocation for prefix caching in bytes.')
  cpu_decode_kernels: bool = F("On a single CPU device, the decode step's float32 matmuls of at most 8 rows, few-query attention over a float32 cache and the logits' argmax and log-sum-exp use C++ kernels built on first use (maxtext_like.kernels); false keeps XLA's ops.")
