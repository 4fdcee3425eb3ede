"""Every enumerated model value, in one place and without JAX: the model checks its spec against these, and the
config accepts exactly these (config/unsupported.py derives from them; tests/config/test_choices.py checks the
config's Literals hold them).
"""

ATTENTION_KERNELS = ("dot_product", "flash", "autoselected", "cudnn_flash_jax")
ATTENTION_VALUES = ATTENTION_KERNELS + ("paged",)  # `attention=paged`: the engine's paged KV cache (inference/paging.py)
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
