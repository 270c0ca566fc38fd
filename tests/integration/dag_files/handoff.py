"""Hand-offs between Ray tasks that run in separate Airflow task processes (LocalExecutor).

Twenty producer/consumer pairs: each producer returns an array that only it can make, each
consumer checks it got exactly that one. A plain @task and a BashOperator read a value too.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task

PAIRS = 20


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), max_active_tasks=8)
def handoff():
    @task.ray(num_cpus=0.25)
    def produce(i: int):
        import numpy as np

        return np.full(512 * 1024, i, dtype=np.int64)  # 4 MB

    @task.ray(num_cpus=0.25)
    def consume(array, i: int) -> dict:
        import numpy as np

        return {
            "i": i,
            "ok": bool(np.all(array == i)),
            "size": int(array.size),
            "writeable": bool(array.flags.writeable),
        }

    @task
    def plain(array) -> int:
        return int(array.sum())

    outputs = []
    for i in range(PAIRS):
        produced = produce.override(task_id=f"produce_{i}")(i)
        consume.override(task_id=f"consume_{i}")(produced, i)
        outputs.append(produced)
    plain(outputs[3])
    (
        BashOperator(task_id="bash", bash_command="echo first={{ ti.xcom_pull(task_ids='produce_5')[0] }}")
        << outputs[5]
    )


handoff()
