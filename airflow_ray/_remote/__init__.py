"""Code that runs inside the Ray cluster, shipped there by value.

Everything in this package is registered with cloudpickle by value (see
:mod:`airflow_ray.cluster.byvalue`), so a cluster without airflow-ray installed runs it. It
imports only the standard library, Ray and itself at module level; numpy, pyarrow, pandas and
boto3 are imported inside the functions that need them. A lint rule scoped to this folder and a
test that imports each module with ``airflow`` made unimportable hold it to that.

- :mod:`.protocol`: what crosses between the Airflow worker and the cluster, as plain data;
- :mod:`.task`: runs a callable in a Ray task and streams its output;
- :mod:`.owner_actor`: the detached actor that submits tasks and owns their results;
- :mod:`.s3io`, :mod:`.codecs`, :mod:`.checkpoint_io`: checkpoints, read and written where the
  value is.
"""
