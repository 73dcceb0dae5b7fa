"""Prompt datasets for RL: verl-format parquet in, padded prompt tensors out.

- `strive.data.gsm8k`: writes GSM8K as verl-format parquet (examples/data_preprocess/gsm8k.py);
- `strive.data.rl_dataset`: `RLDataset` + `collate`, chat-templated, left-padded prompts;
- `strive.data.sampler`: `ResumableSampler`, batches whose position goes into checkpoints.

Submodules are imported explicitly; this package imports nothing so it stays cheap.
"""
