"""Operators of the Ray provider."""
