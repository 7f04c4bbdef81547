"""Evaluation: generation, language fidelity, degeneration, retention."""
