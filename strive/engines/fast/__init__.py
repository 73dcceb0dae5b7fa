"""The hf engine's fast decode path; see engine.py. Nothing is imported here, so `strive.engines.base` can read
the torch-free options module without loading torch."""
