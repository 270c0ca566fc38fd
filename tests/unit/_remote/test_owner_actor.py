"""The owner actor's pins, retention and TTL, on its body alone: no Ray, refs are plain objects."""

from __future__ import annotations

import asyncio

import pytest

from airflow_ray._remote.owner_actor import OwnerActor
from airflow_ray._remote.protocol import CallState, PollReply, Producer


def pin(actor: OwnerActor, dag_id: str, run_id: str, task_id: str, created: float) -> Producer:
    producer = Producer(dag_id, run_id, task_id)
    actor.pin(producer, f"ref of {producer.pin_key}", {"type": "int", "size_bytes": 28}, created)
    return producer


def pinned(
    actor: OwnerActor, dag_id: str | None = None, run_id: str | None = None
) -> set[tuple[str, str, str]]:
    return {
        (item["dag_id"], item["run_id"], item["task_id"])
        for item in asyncio.run(actor.list_pins(dag_id, run_id))
    }


@pytest.fixture
def actor() -> OwnerActor:
    return OwnerActor(keep_runs=2, pin_ttl=100.0)


def test_only_the_newest_runs_of_the_dag_keep_their_pins(actor):
    # Runs are ordered by their first pin, not by name; a late pin does not make a run newer.
    pin(actor, "higgs", "z_oldest", "load", 1.0)
    pin(actor, "higgs", "z_oldest", "train", 50.0)
    pin(actor, "higgs", "b_middle", "load", 2.0)
    pin(actor, "higgs", "a_newest", "load", 3.0)
    pin(actor, "higgs", "a_newest", "train", 4.0)
    for run, created in (("o1", 1.0), ("o2", 2.0), ("o3", 3.0)):
        pin(actor, "other", run, "t", created)

    actor._apply_retention("higgs")

    assert pinned(actor, "higgs") == {
        ("higgs", "b_middle", "load"),
        ("higgs", "a_newest", "load"),
        ("higgs", "a_newest", "train"),
    }
    assert pinned(actor, "other") == {("other", "o1", "t"), ("other", "o2", "t"), ("other", "o3", "t")}


def test_retention_keeps_everything_while_there_are_few_runs(actor):
    pin(actor, "higgs", "r1", "t", 1.0)
    pin(actor, "higgs", "r2", "t", 2.0)
    actor._apply_retention("higgs")
    assert pinned(actor) == {("higgs", "r1", "t"), ("higgs", "r2", "t")}


def test_pins_older_than_the_ttl_are_released(actor):
    pin(actor, "d", "r1", "old", 0.0)
    pin(actor, "d", "r1", "at_ttl", 60.0)
    pin(actor, "e", "r2", "young", 100.0)
    assert actor.sweep(now=160.0) == 1
    assert pinned(actor) == {("d", "r1", "at_ttl"), ("e", "r2", "young")}
    assert actor.sweep(now=161.0) == 1
    assert actor.sweep(now=161.0) == 0
    assert pinned(actor) == {("e", "r2", "young")}


def test_configure_changes_retention_and_ttl(actor):
    for run, created in (("r1", 1.0), ("r2", 2.0), ("r3", 3.0)):
        pin(actor, "d", run, "t", created)
    actor.configure(keep_runs=1, pin_ttl=10.0)
    actor._apply_retention("d")
    assert pinned(actor) == {("d", "r3", "t")}
    assert actor.sweep(now=13.5) == 1
    assert pinned(actor) == set()


def test_release_matching_by_dag_and_by_run(actor):
    for dag in ("d", "e"):
        for run in ("r1", "r2"):
            pin(actor, dag, run, "t", 1.0)
            pin(actor, dag, run, "u", 1.0)
    assert asyncio.run(actor.release_matching("d", "r1")) == 2
    assert pinned(actor, "d") == {("d", "r2", "t"), ("d", "r2", "u")}
    assert asyncio.run(actor.release_matching("e")) == 4
    assert pinned(actor) == {("d", "r2", "t"), ("d", "r2", "u")}
    assert asyncio.run(actor.release_matching("e")) == 0
    assert asyncio.run(actor.release_matching()) == 2
    assert pinned(actor) == set()


def test_pins_are_listed_released_and_reached_by_key(actor):
    kept = pin(actor, "d", "r", "kept", 5.0)
    gone = pin(actor, "d", "r", "gone", 6.0)
    first, _ = asyncio.run(actor.list_pins("d", "r"))
    assert first == {
        "pin": kept.pin_key,
        "created": 5.0,
        **kept.to_wire(),
        "meta": {"type": "int", "size_bytes": 28},
    }
    assert asyncio.run(actor.held(["nope", gone.pin_key, kept.pin_key])) == [gone.pin_key, kept.pin_key]
    assert asyncio.run(actor.release([gone.pin_key, "nope"])) == 1
    assert asyncio.run(actor.held([gone.pin_key, kept.pin_key])) == [kept.pin_key]
    assert asyncio.run(actor.get(kept.pin_key)) == [f"ref of {kept.pin_key}"]
    assert asyncio.run(actor.get(gone.pin_key)) is None


def test_a_pin_under_the_same_key_replaces_the_old_one(actor):
    producer = pin(actor, "d", "r", "t", 1.0)
    actor.pin(producer, "new ref", {"type": "str"}, 2.0)
    assert asyncio.run(actor.get(producer.pin_key)) == ["new ref"]
    assert len(asyncio.run(actor.list_pins())) == 1


def test_polling_an_unknown_call_says_so(actor):
    reply = PollReply.from_wire(asyncio.run(actor.poll("no-such-call", 4, 0.01)))
    assert reply == PollReply(CallState.UNKNOWN, offset=4)
    assert reply.state.is_terminal()


def test_a_newer_try_s_pin_releases_what_earlier_tries_of_the_task_pinned(actor):
    first = Producer("d", "r", "t", try_number=1)
    actor.pin(first, "ref 1", {}, 1.0)
    actor.pin(first.with_key("extra"), "ref 1 extra", {}, 1.0)
    other = Producer("d", "r", "other", try_number=1)
    actor.pin(other, "ref other", {}, 1.0)
    actor.pin(first.with_try(2), "ref 2", {}, 2.0)
    keys = {item["pin"] for item in asyncio.run(actor.list_pins())}
    assert keys == {"d/r/t/-1/return_value@2", "d/r/other/-1/return_value@1"}


class _Stops:
    def __init__(self, actor: OwnerActor) -> None:
        self.reasons: dict[int, str | None] = {}
        actor._stop = self  # type: ignore[method-assign]

    def __call__(self, call, reason):
        call.stop_reason = reason
        self.reasons[id(call)] = reason


def test_calls_nobody_polls_past_their_orphan_timeout_are_stopped(actor):
    from airflow_ray._remote.owner_actor import _Call

    stops = _Stops(actor)
    followed = actor._calls["followed"] = _Call(None, None, orphan_timeout=10.0)
    orphan = actor._calls["orphan"] = _Call(None, None, orphan_timeout=10.0)
    unbounded = actor._calls["unbounded"] = _Call(None, None)
    now = orphan.seen_at + 11.0
    followed.seen_at = now - 1.0
    unbounded.seen_at = 0.0
    assert actor.stop_orphans(now) == ["orphan"]
    assert "nobody followed it for 10 s" in stops.reasons[id(orphan)]
    assert actor.stop_orphans(now) == []  # stopped once
    assert 0.5 <= actor._sweep_interval() <= 10.0 / 3


def test_a_newer_try_stops_the_calls_of_earlier_tries_and_their_results_are_never_pinned(actor):
    from airflow_ray._remote.owner_actor import _Call

    stops = _Stops(actor)
    first = Producer("d", "r", "t", try_number=1)
    old = actor._calls["old"] = _Call(None, first)
    neighbour = actor._calls["neighbour"] = _Call(None, Producer("d", "r", "u", try_number=1))
    actor._supersede(first.with_try(2))
    assert stops.reasons == {id(old): "try 2 of the task started over"}
    assert neighbour.stop_reason is None
    actor._supersede(first)  # an older try asking later changes nothing
    assert actor._newest_try[first.task_instance] == 2


def test_polls_read_a_calls_bounded_output_and_are_told_what_was_dropped(actor):
    from airflow_ray._remote.output_buffer import OutputBuffer
    from airflow_ray._remote.owner_actor import _Call

    call = actor._calls["chatty"] = _Call(None, None, output=OutputBuffer(limit=64))
    call.state = CallState.DONE
    for n in range(20):
        call.output.append(f"line {n:02d}\n")
    reply = PollReply.from_wire(asyncio.run(actor.poll("chatty", 0, 0)))
    assert reply.offset == 20
    assert reply.output[0].startswith(
        "[airflow-ray] 12 line(s), 96 bytes, of this task's output were dropped"
    )
    assert reply.output[1:] == [f"line {n:02d}\n" for n in range(12, 20)]
    assert PollReply.from_wire(asyncio.run(actor.poll("chatty", 20, 0))).output == []


def test_sizes_the_task_left_unmeasured_are_the_ones_ray_stores():
    from airflow_ray._remote.owner_actor import unmeasured, with_stored_sizes
    from airflow_ray._remote.protocol import Returned

    array = Returned({"type": "numpy.ndarray", "size_bytes": 48, "shape": [3, 4]})
    assert not unmeasured(array)  # measured by the task (nbytes): kept as it is
    assert with_stored_sizes(array, [300]) == array
    model = Returned({"type": "Booster", "size_bytes": None})
    assert unmeasured(model)
    assert with_stored_sizes(model, [1234]) == Returned({"type": "Booster", "size_bytes": 1234})
    assert with_stored_sizes(model, [None]) == model  # Ray did not say: unknown, not a failure


def test_a_split_dicts_unmeasured_sizes_come_from_its_values():
    from airflow_ray._remote.owner_actor import unmeasured, with_stored_sizes
    from airflow_ray._remote.protocol import Returned

    split = Returned(
        {"type": "dict", "size_bytes": None, "length": 2},
        {
            "train": {"type": "numpy.ndarray", "size_bytes": 2048},
            "model": {"type": "Booster", "size_bytes": None},
        },
    )
    assert unmeasured(split)
    assert with_stored_sizes(split, [2300, 700]) == Returned(
        {"type": "dict", "size_bytes": 2748, "length": 2},
        {
            "train": {"type": "numpy.ndarray", "size_bytes": 2048},
            "model": {"type": "Booster", "size_bytes": 700},
        },
    )
    unknown = with_stored_sizes(split, [2300, None])
    assert unknown.meta["size_bytes"] is None and unknown.parts is not None
    assert unknown.parts["model"]["size_bytes"] is None


def test_the_result_refs_are_taken_once_the_task_finished_without_polling():
    from airflow_ray._remote.owner_actor import _last_refs

    class Generator:
        """A streaming task's generator: its items are reported once it has completed."""

        def __init__(self) -> None:
            self.done = asyncio.Event()
            self.items = iter(["ref a", "ref b"])

        def completed(self):
            return self.done.wait()

        async def __anext__(self):
            assert self.done.is_set(), "an item was taken before the task had reported it"
            return next(self.items)

    async def scenario() -> list[str]:
        generator = Generator()
        waiting = asyncio.ensure_future(_last_refs(generator, 2))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # waits for the task, asleep: no loop around ray.wait
        generator.done.set()
        return await waiting

    assert asyncio.run(scenario()) == ["ref a", "ref b"]


def test_output_chunks_that_run_out_of_order_are_shown_in_the_order_they_were_printed(actor):
    # An async actor runs one caller's calls in no set order: chunk 2 may come before chunk 1.
    from airflow_ray._remote.owner_actor import _Call

    actor._calls["c"] = _Call(None, None)

    async def send(order: list[int]) -> list[str]:
        shown: list[str] = []
        for seq in order:
            await actor.output("c", seq, f"line {seq}\n")
            reply = PollReply.from_wire(await actor.poll("c", len(shown), 0.0))
            shown += reply.output
        return shown

    shown = asyncio.run(send([0, 2, 3, 1, 5, 4]))
    assert shown == [f"line {i}\n" for i in range(6)]
