"""Inference: parameters from a checkpoint, prefill into a KV cache, sampled generation."""
