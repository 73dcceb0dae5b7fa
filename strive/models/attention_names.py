"""The packed-attention backend names a config may give (`*.model.packed_attention`), importable without torch.

strive/models/attention.py dispatches on these; strive/config checks a user's choice against the same tuple
before anything starts.
"""

BACKENDS = ("auto", "varlen", "flash_attn", "sdpa_loop")
