"""Loading HF models and tokenizers, offline fixture models, and the chunked log-prob forward.

Submodules import torch/transformers when used; this package file imports nothing heavy.
"""
