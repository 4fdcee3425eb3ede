"""Every enumerated model value, in one place and without JAX: the model checks its spec against these, and the
config accepts exactly these (config/unsupported.py derives from them; tests/config/test_choices.py checks the
config's Literals hold them).
"""

ATTENTION_KERNELS = ("dot_product", "flash", "autoselected", "cudnn_flash_jax")
# The config's `attention` values: the kernels, `paged` (the engine's paged KV cache, inference/paging.py) and
# `cudnn_flash_te` (mapped to a kernel by runtime/kernel_names.py).
ATTENTION_VALUES = ATTENTION_KERNELS + ("paged", "cudnn_flash_te")
ROPE_TYPES = ("default", "llama3.1", "yarn")
ATTENTION_TYPES = ("global", "mla")
ACTIVATIONS = ("linear", "silu", "swish", "gelu", "gelu_exact", "relu", "tanh", "sigmoid")
MATMUL_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")
REMAT_POLICIES = (
    "none",
    "full",
    "minimal",
    "minimal_with_context",
    "save_dot_with_context_except_mlp",
    "save_dot_except_mlpwi",
    "save_dot_except_mlp",
    "save_qkv_proj",
    "qkv_proj_offloaded",
    "custom",
    "minimal_offloaded",
    "save_out_proj",
)
# Names tagged with `jax.ad_checkpoint.checkpoint_name` inside a decoder layer.
REMAT_NAMES = (
    "decoder_layer_input",
    "context",
    "mlpwi",
    "mlpwi_0",
    "mlpwi_1",
    "mlpwo",
    "query_proj",
    "key_proj",
    "value_proj",
    "qkv_proj",
    "out_proj",
)
REMAT_LOCATIONS = ("remat", "device", "offload")

# `quantization` values that train through qwix rules (models/quantization.py), and the rest with why they are refused.
QUANTIZATION_QWIX = ("int8", "int8w", "int4", "int4w", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_full", "intmp")
_TE = "a TransformerEngine recipe: needs an NVIDIA GPU and the transformer_engine package (neither is here)"
QUANTIZATION_REFUSED = {
    "fp8_gpu": "NVIDIA fp8 with delayed scaling (flax Fp8DirectDotGeneralOp): needs an NVIDIA GPU with fp8 matmuls; "
               "use fp8 or fp8_full (qwix, which emulates fp8 where the hardware lacks it)",
    "nanoo_fp8": "AMD fp8 (NANOO, flax NANOOFp8DotGeneralOp): needs an AMD MI300-class GPU; use fp8 or fp8_full",
    "fp8_nanoo": "AMD fp8 (NANOO, flax NANOOFp8DotGeneralOp): needs an AMD MI300-class GPU; use fp8 or fp8_full",
    "te_fp8_delayedscaling": _TE,
    "te_fp8_currentscaling": _TE,
    "te_mxfp8": _TE,
    "te_nvfp4": _TE,
    "te_nvfp4_no_rht": _TE,
}

# lora_weight_qtype values: the frozen base's storage type for QLoRA (models/lora.py maps them to qwix qtypes).
LORA_WEIGHT_QTYPES = ("nf4", "int4", "int8", "fp8")
