"""Fine-tuning: RoboPoint-format data, the collator and sampler, the TRL trainer and its arguments."""
