"""Integrations with model libraries (diffusers)."""
