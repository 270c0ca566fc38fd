"""Reaching a Ray cluster: addresses, the embedded local head, connecting, remote calls.

Nothing here imports Ray at module level.
"""
