"""Checkpoints in the ORIGINAL RoboPoint / LLaVA-1.5 format: reading (full, LoRA + base, projector-only), streaming
conversion to Hub folders, export to plain transformers LLaVA, and their model cards."""
