"""What produces batches.

The pass cursor, the unit sampler, the dataset wrappers, the per-process producer,
caller isolation, RNG access, and the one bridge to torch's and torchdata's private
internals (:mod:`reproloader._runtime.bridge`).
"""
