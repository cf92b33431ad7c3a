"""Serving a trained model: an OpenAI-compatible API and a chat page (`python serve.py`)."""
