"""Evaluation: answering a test split, scoring the answers with exact match or a judge LLM."""
