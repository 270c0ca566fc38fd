"""Results kept in the Ray cluster, from the Airflow worker's side.

- :mod:`.handover`: a Ray task's inputs that are results in the cluster travel as pin keys;
- :mod:`.resolve`: the value of a reference for a consumer that is not a Ray task;
- :mod:`.restore`: a result the cluster lost is put back from its S3 checkpoint;
- :mod:`.persist`: results written from the cluster to S3;
- :mod:`.release`: unpinning.

Each goes through the :class:`~airflow_ray.cluster.transport.Transport` of the reference's
connection.
"""
