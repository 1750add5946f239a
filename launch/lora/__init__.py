"""The LoRA kit shared by every backend that trains an adapter (local, vLLM, Tinker): the
parameters, the update's objective, the transformers + peft learner, the two-phase sampling
budget, and the tiny random model the tests use. ``launch/local`` is the local backend alone."""
