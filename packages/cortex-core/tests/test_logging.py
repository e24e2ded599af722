import json
import logging

import pytest

from cortex_core.logging import RequestIdFilter, client_request_id, configure, request_id


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_carry_the_request_id(capsys):
    configure("debug")
    token = request_id.set("req-1")
    try:
        logging.getLogger("cortex_test").info("loaded %s", "m")
    finally:
        request_id.reset(token)
    line = capsys.readouterr().err.strip()
    assert line.endswith("INFO cortex_test [req-1] loaded m")


def test_json_lines(capsys):
    configure("INFO", "json")
    logging.getLogger("cortex_test").debug("not shown")
    logging.getLogger("cortex_test").warning("outside %d", 1)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("cortex_test").exception("failed")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "outside 1"
    assert first["request_id"] == "-"
    assert first["level"] == "WARNING"
    assert first["time"].endswith("Z")
    assert "exception" not in first
    assert "ValueError: boom" in second["exception"]


def test_filter_never_drops():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RequestIdFilter().filter(record)
    assert record.__dict__["request_id"] == "-"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-request-id", b"req-1")], "req-1"),
        ([(b"host", b"x"), (b"x-request-id", b"a" * 128)], "a" * 128),
        ([(b"x-request-id", b"a" * 129)], None),
        ([(b"x-request-id", b"")], None),
        ([(b"x-request-id", b"two words")], None),
        ([(b"x-request-id", b"line\nbreak")], None),
        ([(b"x-request-id", "caf\u00e9".encode())], None),
        ([(b"host", b"x")], None),
    ],
)
def test_client_request_id(headers, expected):
    assert client_request_id(headers) == expected


def test_the_text_time_is_rendered_once_a_second_with_its_milliseconds():
    from cortex_core.logging import TextFormatter

    formatter = TextFormatter()
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", (), None)
    record.created, record.msecs = 1_800_000_000.25, 250.0
    first = formatter.formatTime(record)
    record.created, record.msecs = 1_800_000_000.75, 750.0
    assert formatter.formatTime(record) == first.replace(",250", ",750")
    record.created = 1_800_000_001.0
    assert formatter.formatTime(record) != first[:-4] + ",000"  # a new second: a new stamp
    assert logging.Formatter().formatTime(record) == formatter.formatTime(record)[:-4] + ",750"
