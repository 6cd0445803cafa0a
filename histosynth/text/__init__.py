"""Pathology report text: extractive summaries, LLM summaries, prompt building."""
