"""Reaching a Ray cluster from the Airflow worker: addresses, connecting, the embedded local
head, the owner actor's lookup, and the transports that run tasks there.

Nothing here imports Ray at module level. What runs inside the cluster is
:mod:`airflow_ray._remote`.
"""
