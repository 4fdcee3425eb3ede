"""What every entry point shares: the model spec of a config, checkpoint reading, the tokenizer.

Training, inference, conversion, the Python API and `data_inspect` all import from here, so none of them reaches
into another (inference and convert never import `training/`).
"""
