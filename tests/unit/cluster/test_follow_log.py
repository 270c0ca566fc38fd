"""How a job's log is followed (``follow_log``), against a fake dashboard: over the Jobs API's
tail once it is long, each line once, and the whole log read only when needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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

    def __init__(self, refuse_tails: int = 0) -> None:
        self.status = "PENDING"
        self.log = ""
        self.whole_reads = 0
        self.tails: list[int] = []  # the skip of each tail opened
        self.refuse_tails = refuse_tails
        self.break_tail = False

    async def info(self, submission_id: str) -> dict:
        return {"status": self.status}

    async def logs(self, submission_id: str) -> str:
        self.whole_reads += 1
        return self.log

    async def log_tail(self, submission_id: str, skip: int) -> AsyncIterator[str]:
        self.tails.append(skip)
        if len(self.tails) <= self.refuse_tails:
            raise RayConnectionError("The Ray Jobs API answered 404 to following the log")
        sent = skip
        while True:
            if self.break_tail:
                self.break_tail = False
                raise RayConnectionError("the tail broke")
            if len(self.log) > sent:
                # In pieces that cut lines, as the dashboard's chunks do.
                piece = self.log[sent : sent + 7]
                sent += len(piece)
                yield piece
            elif self.status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return  # all sent, and the job has ended
            await asyncio.sleep(0.001)


@pytest.fixture(autouse=True)
def tail_at_once(monkeypatch):
    """The tail follows the log from its first byte (a test of the switch sets its own)."""
    monkeypatch.setattr(jobs, "TAIL_AFTER", 0)


def follow(dashboard: FakeDashboard, script) -> tuple[dict | None, dict | None, list[str]]:
    shown: list[str] = []

    async def main():
        reader = LogReader()
        followed = asyncio.create_task(follow_log(dashboard, "job", reader, shown.append, 0.01))  # type: ignore[arg-type]
        await script()
        return await asyncio.wait_for(followed, 10)

    record_, info = asyncio.run(main())
    return record_, info, shown


def test_a_running_job_is_read_over_the_tail_each_line_once():
    dashboard = FakeDashboard()

    async def script():
        await asyncio.sleep(0.05)  # pending: the whole log is read, and is empty
        dashboard.status = "RUNNING"
        dashboard.log += "Ray's start-up line\n" + BEGIN
        for i in range(50):
            dashboard.log += f"line {i}\n"
            await asyncio.sleep(0.002)
        reads = dashboard.whole_reads
        dashboard.log += END
        await asyncio.sleep(0.05)
        assert dashboard.whole_reads == reads  # nothing read whole while the tail runs

    answer, _, shown = follow(dashboard, script)
    assert answer == {"event": "end", "reply": {"state": "done"}}
    assert shown == [f"line {i}\n" for i in range(50)]
    assert dashboard.tails == [0]


def test_a_short_log_is_read_whole_and_a_long_one_over_the_tail_from_where_it_got(monkeypatch):
    monkeypatch.setattr(jobs, "TAIL_AFTER", 100)
    dashboard = FakeDashboard()

    async def script():
        dashboard.status = "RUNNING"
        dashboard.log += BEGIN + "short\n"
        await asyncio.sleep(0.05)
        assert dashboard.tails == [] and dashboard.whole_reads > 1  # read whole, poll after poll
        dashboard.log += "".join(f"long line {i:03}\n" for i in range(20))
        await asyncio.sleep(0.05)
        reads = dashboard.whole_reads
        dashboard.log += "".join(f"more {i}\n" for i in range(20))
        await asyncio.sleep(0.05)
        assert dashboard.whole_reads == reads  # the tail brings the rest
        dashboard.log += END

    answer, _, shown = follow(dashboard, script)
    assert answer is not None
    assert shown == ["short\n"] + [f"long line {i:03}\n" for i in range(20)] + [
        f"more {i}\n" for i in range(20)
    ]
    assert len(dashboard.tails) == 1 and dashboard.tails[0] >= 100


def test_a_refused_tail_falls_back_to_the_whole_log_and_is_tried_again(monkeypatch):
    monkeypatch.setattr(jobs, "TAIL_RETRY", 0.05)
    dashboard = FakeDashboard(refuse_tails=1)

    async def script():
        dashboard.status = "RUNNING"
        dashboard.log += BEGIN + "first\n"
        await asyncio.sleep(0.03)  # refused; the whole log is read meanwhile
        dashboard.log += "second\n"
        await asyncio.sleep(0.15)  # the second tail starts where the whole log ended
        dashboard.log += "third\n" + END

    answer, _, shown = follow(dashboard, script)
    assert answer is not None and answer["event"] == "end"
    assert shown == ["first\n", "second\n", "third\n"]
    assert dashboard.whole_reads >= 1
    assert len(dashboard.tails) == 2 and dashboard.tails[1] > 0


def test_a_tail_that_breaks_is_opened_again_where_it_stopped(monkeypatch):
    monkeypatch.setattr(jobs, "TAIL_RETRY", 0.02)
    dashboard = FakeDashboard()

    async def script():
        dashboard.status = "RUNNING"
        dashboard.log += BEGIN + "".join(f"before {i}\n" for i in range(5))
        await asyncio.sleep(0.05)
        reads = dashboard.whole_reads
        dashboard.break_tail = True  # after serving longer than TAIL_RETRY: a proxy's timeout
        await asyncio.sleep(0.01)
        dashboard.log += "".join(f"after {i}\n" for i in range(5))
        await asyncio.sleep(0.1)
        assert dashboard.whole_reads == reads  # opened again at once, not read whole meanwhile
        dashboard.log += END

    answer, _, shown = follow(dashboard, script)
    assert answer is not None
    assert shown == [f"before {i}\n" for i in range(5)] + [f"after {i}\n" for i in range(5)]
    assert len(dashboard.tails) >= 2 and dashboard.tails[-1] > 0


def test_a_job_that_ends_without_an_answer_gives_its_info_and_every_line():
    dashboard = FakeDashboard()

    async def script():
        dashboard.status = "RUNNING"
        dashboard.log += BEGIN + "working\n"
        await asyncio.sleep(0.05)
        # Killed: its last words and its end at once, before the tail delivers them.
        dashboard.log += "Killed\nno newline at the end"
        dashboard.status = "FAILED"

    answer, info, shown = follow(dashboard, script)
    assert answer is None and info == {"status": "FAILED"}
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


@pytest.fixture
def tail_server():
    """A dashboard's ``/api/jobs/<id>/logs/tail`` websocket under a path, on 127.0.0.1, that
    sends what the test gives it and says which headers it got."""
    from aiohttp import web

    got: dict = {}

    async def tail(request: web.Request) -> web.StreamResponse:
        got["headers"] = dict(request.headers)
        if request.match_info["job"] == "gone":
            return web.Response(status=404, text="Job gone does not exist")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        for chunk in got["chunks"]:
            await socket.send_str(chunk)
        await socket.close()  # the job has ended: all of its log is sent
        return socket

    app = web.Application()
    app.router.add_get("/ray/api/jobs/{job}/logs/tail", tail)

    async def start() -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    got["start"] = start
    return got


def tail_of(server: dict, job: str, skip: int) -> str:
    async def run() -> str:
        runner, port = await server["start"]()
        endpoint = JobsEndpoint(
            f"http://127.0.0.1:{port}/ray", "connection 'ray_jobs'", "token", extra_headers={"X-Proxy": "p"}
        )
        client = AsyncJobsClient(endpoint)
        try:
            return "".join([text async for text in client.log_tail(job, skip)])
        finally:
            await client.close()
            await runner.cleanup()

    return asyncio.run(run())


@pytest.mark.parametrize("skip", [0, 3, 9, 40])
def test_the_tail_skips_what_was_read_and_ends_with_the_job(tail_server, skip):
    tail_server["chunks"] = ["héllo\nwö", "rld\n", "end\nno newline"]
    whole = "".join(tail_server["chunks"])
    assert tail_of(tail_server, "job-1", skip) == whole[skip:]
    assert tail_server["headers"]["Authorization"] == "Bearer token"
    assert tail_server["headers"]["X-Proxy"] == "p"


def test_a_refused_tail_raises_the_error_that_names_the_connection(tail_server):
    with pytest.raises(
        RayConnectionError, match=r"connection 'ray_jobs' answered 404 to following the log of job gone"
    ):
        tail_of(tail_server, "gone", 0)
