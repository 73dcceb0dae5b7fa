"""The hf engine's fast decode path. Runs choose it with rollout.name=hf and engine_kwargs.hf.fast (auto: CUDA and
Llama/Qwen2); `strive.engines.base.start_engine` decides and prints one line saying which path runs and why.

    options.py    the engine_kwargs.hf options and the plain-or-fast choice (torch-free)
    engine.py     FastHFEngine: HFEngine's weights handling, with generate and the KV cache given to the generator
    generator.py  FastGenerator: preallocated KV cache, CUDA graphs, the decode loop
    batching.py   continuous batching over the cache's slots
    model.py      the Llama/Qwen2 forward over that cache, on the transformers model's own parameters
    sampling.py   sampling on the device from per-token uniforms
    kernels.py    Triton kernels for the decode step (CUDA, optional)

Nothing is imported here: start_engine reads options.py without loading torch.

    pytest tests/integration/test_fast_engine.py tests/integration/test_engine_start.py -q
"""
