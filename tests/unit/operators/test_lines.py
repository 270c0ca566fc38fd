"""How a Ray task's output lines become task-log records: one level per line."""

from __future__ import annotations

import logging

import pytest

from airflow_ray.operators.lines import LineLogger, log_line


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.DEBUG, logger="test.lines")
    return logging.getLogger("test.lines")


def records(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "test.lines"]


def test_a_logging_record_of_the_callable_keeps_its_level_once(caplog, log):
    # As _remote/task.py formats the callable's records: "<LEVEL> <logger>: <message>".
    with LineLogger.to(log) as lines:
        lines.write("INFO higgs_model: round 1/20\nWARNING higgs_data: 3 rows dropped\n")
        lines.write("ERROR root: failed: x\nDEBUG a.b: detail")
    assert records(caplog) == [
        ("INFO", "higgs_model: round 1/20"),
        ("WARNING", "higgs_data: 3 rows dropped"),
        ("ERROR", "root: failed: x"),
        ("DEBUG", "a.b: detail"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "plain print",
        "INFO without a logger name",
        "Info higgs_model: not a level",
        "  INFO higgs_model: indented",
        "",
    ],
)
def test_anything_else_is_logged_as_is_at_info(caplog, log, line):
    log_line(log, line)
    assert records(caplog) == [("INFO", line)]
