"""maxtext_like: train, fine-tune and serve LLMs in JAX with a MaxText-compatible, typed config."""

__version__ = "0.1.0"
