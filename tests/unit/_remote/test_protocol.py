"""What crosses between the Airflow worker and the cluster: each type and its wire form."""

from __future__ import annotations

import pickle

import pytest

from airflow_ray._remote.protocol import (
    UNCHANGED,
    CallError,
    CallState,
    CheckpointRefusedError,
    ErrorKind,
    Failure,
    Output,
    PollReply,
    Producer,
    Returned,
    fill_slots,
    is_refusal,
    map_tree,
    parse_event,
    ref_slot,
    slot_index,
)

PRODUCER = Producer("higgs", "manual__2026-11-24T10:00:00+00:00", "train", 2, "model")


def test_producer_wire_round_trip_and_defaults():
    wire = PRODUCER.to_wire()
    assert wire == {
        "dag_id": "higgs",
        "run_id": "manual__2026-11-24T10:00:00+00:00",
        "task_id": "train",
        "map_index": 2,
        "key": "model",
    }
    assert Producer.from_wire(wire) == PRODUCER
    assert Producer.from_wire(PRODUCER) is PRODUCER
    sparse = Producer.from_wire({"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": None, "key": ""})
    assert sparse == Producer("d", "r", "t", -1, "return_value")
    assert Producer.from_wire({"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": "3"}).map_index == 3


def test_pin_key_and_with_key():
    assert PRODUCER.pin_key == "higgs/manual__2026-11-24T10:00:00+00:00/train/2/model"
    other = PRODUCER.with_key("metrics")
    assert other == Producer("higgs", "manual__2026-11-24T10:00:00+00:00", "train", 2, "metrics")
    assert other.pin_key != PRODUCER.pin_key
    assert Producer("d", "r", "t").pin_key == "d/r/t/-1/return_value"


def test_describe_names_the_map_index_only_when_there_is_one():
    assert PRODUCER.describe() == (
        "XCom 'model' of task 'train' (map index 2) in run 'manual__2026-11-24T10:00:00+00:00' of DAG 'higgs'"
    )
    assert Producer("d", "r", "t").describe() == "XCom 'return_value' of task 't' in run 'r' of DAG 'd'"
    assert "(map index 0)" in Producer("d", "r", "t", 0).describe()


@pytest.mark.parametrize(
    "event",
    [
        Output("line 1\n"),
        Failure(pickle.dumps(ValueError("x")), "Traceback ...\nValueError: x"),
        Failure(None, "Traceback ..."),
        Returned({"type": "int", "size_bytes": 28}),
        Returned({"type": "dict", "size_bytes": 100}, {"a": {"type": "int"}, "b": {"type": "str"}}),
    ],
)
def test_events_round_trip(event):
    assert parse_event(event.to_wire()) == event


def test_a_split_return_lists_its_keys_in_order():
    returned = Returned({"type": "dict"}, {"b": {"type": "int"}, "a": {"type": "str"}})
    kind, meta = returned.to_wire()
    assert kind == "return" and meta["split_keys"] == ["b", "a"]
    parsed = parse_event((kind, meta))
    assert parsed.parts is not None and list(parsed.parts) == ["b", "a"]
    assert parse_event(Returned({"type": "int"}).to_wire()).parts is None


def test_an_unknown_event_kind_is_refused():
    with pytest.raises(ValueError, match="'bogus'"):
        parse_event(("bogus", 1))


@pytest.mark.parametrize(
    "reply",
    [
        PollReply(CallState.RUNNING, ["a\n", "b\n"], 2),
        PollReply(CallState.UNKNOWN, offset=7),
        PollReply(CallState.FAILED, [], 3, CallError(ErrorKind.CALLABLE, "Traceback ...", b"pickled")),
        PollReply(CallState.FAILED, ["x"], 1, CallError(ErrorKind.TASK, "worker died")),
        PollReply(CallState.DONE, [], 0, returned=Returned({"type": "int", "size_bytes": 28})),
        PollReply(CallState.DONE, [], 0, returned=Returned({"type": "dict"}, {"k": {"type": "int"}})),
    ],
)
def test_poll_replies_round_trip(reply):
    assert PollReply.from_wire(reply.to_wire()) == reply


def test_call_error_round_trip_without_pickle():
    error = CallError(ErrorKind.TASK, "the task was cancelled")
    assert error.to_wire() == {
        "kind": "task",
        "message": "the task was cancelled",
        "pickled": None,
        "type_name": None,
    }
    assert CallError.from_wire(error.to_wire()) == error


def test_only_running_calls_are_not_terminal():
    assert [state for state in CallState if not state.is_terminal()] == [CallState.RUNNING]


def test_refusals_are_recognised_also_as_a_rebuilt_class():
    assert is_refusal(CheckpointRefusedError("digest mismatch"))

    class Subclass(CheckpointRefusedError):
        pass

    assert is_refusal(Subclass("x"))
    rebuilt = type(
        "CheckpointRefusedError",
        (ValueError,),
        {"__module__": "airflow_ray._remote.protocol", "__qualname__": "CheckpointRefusedError"},
    )
    assert rebuilt is not CheckpointRefusedError
    assert is_refusal(rebuilt("digest mismatch"))
    assert not is_refusal(ValueError("digest mismatch"))
    elsewhere = type("CheckpointRefusedError", (ValueError,), {"__module__": "somewhere.else"})
    assert not is_refusal(elsewhere("x"))


def test_map_tree_replaces_nodes_and_does_not_walk_into_replacements():
    seen = []

    def upper(node):
        seen.append(node)
        if isinstance(node, str):
            return node.upper()
        if isinstance(node, dict) and "stop" in node:
            return "stopped"
        return UNCHANGED

    value = {"a": ["x", ("y", 1)], "b": {"stop": ["z"]}, "c": 2}
    assert map_tree(value, upper) == {"a": ["X", ("Y", 1)], "b": "stopped", "c": 2}
    assert ["z"] not in seen
    assert isinstance(map_tree(("a",), upper), tuple)


def test_fill_slots_puts_each_input_in_its_place():
    assert slot_index(ref_slot(3)) == 3
    assert slot_index(("something", 3)) is None and slot_index([ref_slot(0)]) is None
    args = ([ref_slot(1), "keep"], {"model": ref_slot(0), "nested": {"x": (ref_slot(1),)}})
    inputs = ("model value", "table value")
    assert fill_slots(args, inputs) == (
        ["table value", "keep"],
        {"model": "model value", "nested": {"x": ("table value",)}},
    )
    assert fill_slots("plain", inputs) == "plain"
