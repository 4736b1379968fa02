"""Inference-time optimisation (ST-ITO style): per example, CMA-ES searches the effect's normalised settings so
that style features of the processed input come as close as possible to those of the reference. No training."""
