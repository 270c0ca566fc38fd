"""The Ray XCom backend: results stay in the Ray cluster, the XCom row holds a small reference.

Enable it with ``AIRFLOW__CORE__XCOM_BACKEND=airflow_ray.xcom.backend.RayXComBackend``.
"""
