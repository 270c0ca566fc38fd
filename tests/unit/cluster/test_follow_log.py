"""How a job's log is followed (``follow_log``), against a fake dashboard: over the log stream
once the job runs, each line once, and the whole log only when there is no stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from airflow_ray._remote.job_entry import record
from airflow_ray.cluster import jobs
from airflow_ray.cluster.jobs import LogReader, follow_log
from airflow_ray.cluster.jobs_api import AsyncJobsClient, JobsEndpoint
from airflow_ray.exceptions import RayConnectionError

BEGIN = record("begin", call_id="1") + "\n"
END = record("end", reply={"state": "done"}) + "\n"


class FakeDashboard:
    """A job's status and its log file, which a test appends to while ``follow_log`` reads."""

    def __init__(self, refuse_streams: int = 0) -> None:
        self.status = "PENDING"
        self.node: str | None = None
        self.log = ""
        self.whole_reads = 0
        self.streams: list[int] = []  # the skip of each stream opened
        self.refuse_streams = refuse_streams
        self.break_stream = False

    async def info(self, submission_id: str) -> dict:
        return {"status": self.status, "driver_node_id": self.node}

    async def logs(self, submission_id: str) -> str:
        self.whole_reads += 1
        return self.log

    async def log_stream(
        self, submission_id: str, node_id: str, skip: int, interval: float
    ) -> AsyncIterator[str]:
        assert node_id == self.node
        self.streams.append(skip)
        if len(self.streams) <= self.refuse_streams:
            raise RayConnectionError("The Ray Jobs API answered 404 to following the log")
        sent = skip
        while True:
            if self.break_stream:
                self.break_stream = False
                raise RayConnectionError("the stream broke")
            if len(self.log) > sent:
                # In pieces that cut lines, as the dashboard's chunks do.
                piece = self.log[sent : sent + 7]
                sent += len(piece)
                yield piece
            await asyncio.sleep(0.001)


def follow(dashboard: FakeDashboard, script) -> tuple[dict | None, dict | None, list[str]]:
    shown: list[str] = []

    async def main():
        reader = LogReader()
        followed = asyncio.create_task(follow_log(dashboard, "job", reader, shown.append, 0.01))  # type: ignore[arg-type]
        await script()
        return await asyncio.wait_for(followed, 10)

    record_, info = asyncio.run(main())
    return record_, info, shown


def test_a_running_job_is_read_over_the_stream_each_line_once():
    dashboard = FakeDashboard()

    async def script():
        await asyncio.sleep(0.05)  # pending: the whole log is read, and is empty
        dashboard.status, dashboard.node = "RUNNING", "node-1"
        dashboard.log += "Ray's start-up line\n" + BEGIN
        for i in range(50):
            dashboard.log += f"line {i}\n"
            await asyncio.sleep(0.002)
        reads = dashboard.whole_reads
        dashboard.log += END
        await asyncio.sleep(0.05)
        assert dashboard.whole_reads == reads  # nothing read twice while the stream runs

    answer, _, shown = follow(dashboard, script)
    assert answer == {"event": "end", "reply": {"state": "done"}}
    assert shown == [f"line {i}\n" for i in range(50)]
    assert dashboard.streams == [0]


def test_a_refused_stream_falls_back_to_the_whole_log_and_is_tried_again(monkeypatch):
    monkeypatch.setattr(jobs, "STREAM_RETRY", 0.05)
    dashboard = FakeDashboard(refuse_streams=1)

    async def script():
        dashboard.status, dashboard.node = "RUNNING", "node-1"
        dashboard.log += BEGIN + "first\n"
        await asyncio.sleep(0.03)  # refused; the whole log is read meanwhile
        dashboard.log += "second\n"
        await asyncio.sleep(0.15)  # the second stream starts where the whole log ended
        dashboard.log += "third\n" + END

    answer, _, shown = follow(dashboard, script)
    assert answer is not None and answer["event"] == "end"
    assert shown == ["first\n", "second\n", "third\n"]
    assert dashboard.whole_reads >= 1
    assert len(dashboard.streams) == 2 and dashboard.streams[1] > 0


def test_a_stream_that_breaks_is_opened_again_where_it_stopped(monkeypatch):
    monkeypatch.setattr(jobs, "STREAM_RETRY", 0.02)
    dashboard = FakeDashboard()

    async def script():
        dashboard.status, dashboard.node = "RUNNING", "node-1"
        dashboard.log += BEGIN + "".join(f"before {i}\n" for i in range(5))
        await asyncio.sleep(0.05)
        reads = dashboard.whole_reads
        dashboard.break_stream = True  # after serving longer than STREAM_RETRY: a proxy's timeout
        await asyncio.sleep(0.01)
        dashboard.log += "".join(f"after {i}\n" for i in range(5))
        await asyncio.sleep(0.1)
        assert dashboard.whole_reads == reads  # opened again at once, not read whole meanwhile
        dashboard.log += END

    answer, _, shown = follow(dashboard, script)
    assert answer is not None
    assert shown == [f"before {i}\n" for i in range(5)] + [f"after {i}\n" for i in range(5)]
    assert len(dashboard.streams) >= 2 and dashboard.streams[-1] > 0


def test_a_job_that_ends_without_an_answer_gives_its_info_and_every_line():
    dashboard = FakeDashboard()

    async def script():
        dashboard.status, dashboard.node = "RUNNING", "node-1"
        dashboard.log += BEGIN + "working\n"
        await asyncio.sleep(0.05)
        # Killed: its last words and its end at once, before the stream delivers them.
        dashboard.log += "Killed\nno newline at the end"
        dashboard.status = "FAILED"

    answer, info, shown = follow(dashboard, script)
    assert answer is None and info == {"status": "FAILED", "driver_node_id": "node-1"}
    assert shown == ["working\n", "Killed\n", "no newline at the end\n"]


def test_a_job_that_is_gone_ends_the_follow_without_reading_its_log():
    dashboard = FakeDashboard()

    async def gone(submission_id: str) -> None:
        return None

    dashboard.info = gone  # type: ignore[method-assign]

    async def script():
        pass

    answer, info, shown = follow(dashboard, script)
    assert (answer, info, shown, dashboard.whole_reads) == (None, None, [], 0)


ENDPOINT = JobsEndpoint("http://ray.example.com:8265", "connection 'ray_jobs'", "token")


@pytest.mark.parametrize("skip", [0, 3, 9, 40])
def test_the_stream_skips_what_was_read_and_reads_text_as_the_whole_log_does(skip):
    # Bytes cut inside a UTF-8 character and between \r and \n: the same text as Ray's
    # /api/jobs/<id>/logs (a file opened as text: UTF-8, newlines translated).
    raw = "héllo\r\nwörld\rend\n".encode()
    chunks = [raw[:2], raw[2:6], raw[6:7], raw[7:15], raw[15:]]
    seen: list[httpx.Request] = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body())

    async def run() -> str:
        client = AsyncJobsClient(ENDPOINT)
        client._http = httpx.AsyncClient(
            base_url=ENDPOINT.url, headers=ENDPOINT.headers(), transport=httpx.MockTransport(handler)
        )
        try:
            return "".join([text async for text in client.log_stream("job-1", "node-1", skip, 0.5)])
        finally:
            await client.close()

    whole = raw.decode().replace("\r\n", "\n").replace("\r", "\n")
    assert asyncio.run(run()) == whole[skip:]
    (request,) = seen
    assert request.url.path == "/api/v0/logs/stream"
    assert dict(request.url.params) == {
        "submission_id": "job-1",
        "node_id": "node-1",
        "lines": "-1",
        "interval": "0.5",
    }
    assert request.headers["Authorization"] == "Bearer token"


def test_a_refused_stream_raises_the_error_that_names_the_connection():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="404: Not Found")

    async def run() -> None:
        client = AsyncJobsClient(ENDPOINT)
        client._http = httpx.AsyncClient(base_url=ENDPOINT.url, transport=httpx.MockTransport(handler))
        try:
            async for _ in client.log_stream("job-1", "node-1", 0, 0.5):
                pass
        finally:
            await client.close()

    with pytest.raises(
        RayConnectionError, match=r"connection 'ray_jobs' answered 404 to following the log of job job-1"
    ):
        asyncio.run(run())
