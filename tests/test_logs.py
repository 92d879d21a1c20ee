"""Log output: logfmt and JSON lines, escaping, extra fields, exceptions, levels."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from exporter.logs import JsonFormatter, LogfmtFormatter, configure_logging
from exporter.secret import Secret

TS = re.compile(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def capture(level: str, fmt: str) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return text.splitlines()


def test_logfmt_line_shape() -> None:
    stream = capture("info", "logfmt")
    logging.getLogger("exporter.poller").info("poll failed", extra={"tenant": "contoso", "status": 503})
    [line] = lines(stream)
    assert TS.match(line), line
    assert TS.sub("", line) == 'level=info logger=exporter.poller msg="poll failed" tenant=contoso status=503'


def test_timestamp_is_utc_with_milliseconds() -> None:
    created = datetime(2026, 11, 25, 21, 57, 55, 123000, tzinfo=UTC).timestamp()
    record = logging.makeLogRecord({"msg": "x", "levelname": "INFO", "name": "n", "created": created})
    assert LogfmtFormatter().format(record).startswith("ts=2026-11-25T21:57:55.123Z ")
    assert json.loads(JsonFormatter().format(record))["ts"] == "2026-11-25T21:57:55.123Z"


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("", '""'),
        ("line1\nline2", '"line1\\nline2"'),
        ("cr\rtab\t", '"cr\\rtab\\t"'),
        ("back\\slash", '"back\\\\slash"'),
        ("bell\x07", '"bell\\u0007"'),
        ("para\u2028graph", '"para\\u2028graph"'),
        ("café", "café"),
        (None, "null"),
        (True, "true"),
        (1.5, "1.5"),
    ],
)
def test_logfmt_value_escaping(value: object, rendered: str) -> None:
    stream = capture("info", "logfmt")
    logging.getLogger("exporter.t").info("m", extra={"v": value})
    [line] = lines(stream)
    assert line.endswith(f" v={rendered}"), line


def test_logfmt_message_and_keys_are_kept_on_one_line() -> None:
    stream = capture("info", "logfmt")
    logging.getLogger("exporter.t").info('multi\nline "msg"', extra={"odd key=": "x", "ts": "spoof"})
    [line] = lines(stream)
    assert TS.sub("", line) == 'level=info logger=exporter.t msg="multi\\nline \\"msg\\"" odd_key_=x ts_=spoof'


def test_json_has_the_same_keys_one_object_per_line() -> None:
    stream = capture("info", "json")
    log = logging.getLogger("exporter.poller")
    log.info("poll failed", extra={"tenant": "contoso", "status": 503, "ok": False, "ratio": float("inf")})
    # Not a JSON type: rendered as its text (a Secret's text is its mask), never a json.dumps TypeError.
    log.warning("second\nevent", extra={"obj": Secret("hunter2-VALUE"), "level": "spoof"})
    first, second = (json.loads(line) for line in lines(stream))
    assert list(first) == ["ts", "level", "logger", "msg", "tenant", "status", "ok", "ratio"]
    assert first["level"] == "info"
    assert first["logger"] == "exporter.poller"
    assert first["msg"] == "poll failed"
    assert first["status"] == 503  # numbers stay numbers
    assert first["ok"] is False
    assert first["ratio"] == "inf"  # JSON has no infinity
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["msg"] == "second\nevent"
    assert second["level"] == "warning"
    assert second["level_"] == "spoof"
    assert second["obj"] == "********"


def test_json_non_ascii_is_escaped_so_line_separators_cannot_split_events() -> None:
    stream = capture("info", "json")
    logging.getLogger("exporter.t").info("x\u2028y", extra={"city": "café"})
    [line] = lines(stream)
    assert line.isascii()
    obj = json.loads(line)
    assert obj["msg"] == "x\u2028y"
    assert obj["city"] == "café"


def fail() -> None:
    raise ValueError("bad value\nsecond line")


def test_err_extra_is_the_err_field_unless_an_exception_claims_it() -> None:
    stream = capture("info", "logfmt")
    log = logging.getLogger("exporter.t")
    log.warning("handshake failed", extra={"err": "bad cert"})
    try:
        fail()
    except ValueError:
        log.exception("crashed", extra={"err": "context"})
    plain, crashed = lines(stream)
    assert plain.endswith(' msg="handshake failed" err="bad cert"')
    assert ' msg=crashed err_=context err="ValueError: bad value second line" stack=' in crashed


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_exception_becomes_err_field_on_one_line(fmt: str) -> None:
    stream = capture("info", fmt)
    try:
        fail()
    except ValueError:
        logging.getLogger("exporter.t").exception("poll crashed", extra={"tenant": "contoso"})
    [line] = lines(stream)
    if fmt == "json":
        obj = json.loads(line)
        assert obj["err"] == "ValueError: bad value second line"
        assert obj["tenant"] == "contoso"
        assert "in fail" in obj["stack"]
    else:
        assert ' tenant=contoso err="ValueError: bad value second line" stack="Traceback' in line
        assert "in fail\\n" in line


def test_levels_filter_events() -> None:
    stream = capture("warning", "logfmt")
    log = logging.getLogger("exporter.t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [TS.sub("", line).split(" ")[0] for line in lines(stream)] == ["level=warning", "level=error"]

    stream = capture("debug", "logfmt")
    log.debug("d")
    assert [TS.sub("", line) for line in lines(stream)] == ["level=debug logger=exporter.t msg=d"]


@pytest.mark.parametrize("level", ["error", "ERROR", "Error"])
def test_level_names_are_case_insensitive(level: str) -> None:
    stream = capture(level, "json")
    logging.getLogger("exporter.t").warning("w")
    logging.getLogger("exporter.t").error("e")
    assert [json.loads(line)["msg"] for line in lines(stream)] == ["e"]


def test_go_style_warn_is_accepted() -> None:
    stream = capture("warn", "logfmt")
    logging.getLogger("exporter.t").info("i")
    logging.getLogger("exporter.t").warning("w")
    assert len(lines(stream)) == 1


def test_invalid_level_and_format_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'; expected one of debug, info, warn, error"):
        configure_logging("verbose", "logfmt")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("info", "xml")


def test_other_libraries_speak_only_from_warning_up_even_at_debug() -> None:
    stream = capture("debug", "logfmt")
    logging.getLogger("asyncio").debug("Using selector: EpollSelector")
    logging.getLogger("httpx").info("HTTP Request: GET https://example.invalid/ok")
    logging.getLogger("httpcore.connection").debug("connect_tcp.started")
    logging.getLogger("exporterish").info("not ours either")
    logging.getLogger("httpx").warning("kept")
    logging.getLogger("asyncio").error("kept too")
    logging.getLogger("exporter").debug("ours")
    logging.getLogger("exporter.poller").debug("ours too")
    assert [TS.sub("", line) for line in lines(stream)] == [
        "level=warning logger=httpx msg=kept",
        'level=error logger=asyncio msg="kept too"',
        "level=debug logger=exporter msg=ours",
        'level=debug logger=exporter.poller msg="ours too"',
    ]


def test_lists_are_json_arrays_and_comma_separated_in_logfmt() -> None:
    log = logging.getLogger("exporter.app")
    fields = {"added": ("alpha", "beta"), "codes": [401, 429]}
    json_stream = capture("info", "json")
    log.info("config reloaded", extra=fields)
    [line] = lines(json_stream)
    assert json.loads(line)["added"] == ["alpha", "beta"]
    assert json.loads(line)["codes"] == [401, 429]
    logfmt_stream = capture("info", "logfmt")
    log.info("config reloaded", extra={**fields, "spaced": ("a b", "c")})
    [line] = lines(logfmt_stream)
    assert line.endswith(' added=alpha,beta codes=401,429 spaced="a b,c"'), line


def test_reconfiguring_replaces_the_handler() -> None:
    first = capture("info", "logfmt")
    second = capture("info", "json")
    logging.getLogger("exporter.t").info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
