"""Procedurally generated tabletop scenes with pointing questions, in RoboPoint's training format."""
