"""Prompt datasets for RL: verl-format parquet in, typed prompt rows out.

- `strive.data.gsm8k`: writes GSM8K as verl-format parquet (examples/data_preprocess/gsm8k.py);
- `strive.data.rl_dataset`: `RLDataset` of typed `PromptRow`s, chat-templated and truncated prompt ids;
- `strive.data.sampler`: `ResumableSampler`, batches whose position goes into checkpoints.

Submodules are imported explicitly; this package imports nothing so it stays cheap.
"""
