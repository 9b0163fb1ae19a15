"""Prompts: the builder (sections, length budget, ERC targets) and the task examples built from it."""
