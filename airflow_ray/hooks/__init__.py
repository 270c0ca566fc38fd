"""Hooks of the Ray provider."""
