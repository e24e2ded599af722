import pytest

from cortex_core import codec
from cortex_core.errors import (
    ContextLengthExceededError,
    CortexError,
    EngineFailedError,
    ErrorDetail,
    ErrorEnvelope,
    InvalidModelIdError,
    InvalidRequestError,
    LoadFailedError,
    ModelBusyError,
    ModelNotFoundError,
    ModelNotLoadedError,
    OutOfMemoryError,
    RateLimitError,
    ServiceUnavailableError,
    ShuttingDownError,
    UnsupportedModelError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_from_envelope,
    to_envelope,
)


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (InvalidRequestError, 400, "invalid_request"),
        (InvalidModelIdError, 400, "invalid_model_id"),
        (ContextLengthExceededError, 400, "context_length_exceeded"),
        (ModelNotFoundError, 404, "model_not_found"),
        (ModelNotLoadedError, 404, "model_not_loaded"),
        (ModelBusyError, 409, "model_busy"),
        (UnsupportedModelError, 422, "unsupported_model"),
        (RateLimitError, 429, "rate_limit_exceeded"),
        (ShuttingDownError, 503, "shutting_down"),
        (OutOfMemoryError, 507, "out_of_memory"),
        (LoadFailedError, 500, "load_failed"),
        (EngineFailedError, 503, "engine_failed"),
        (UpstreamError, 502, "upstream_error"),
        (UpstreamTimeoutError, 504, "upstream_timeout"),
        (UpstreamUnavailableError, 503, "upstream_unavailable"),
    ],
)
def test_each_design_code_has_its_status(cls, status, code):
    exc = cls("boom")
    assert exc.status_code == status
    assert exc.code == code
    assert str(exc) == "boom"


def test_envelope_is_openai_shaped_with_a_string_code():
    exc = InvalidRequestError("max_tokens must be positive", param="max_tokens")
    body = codec.encode(to_envelope(exc))
    assert codec.decode(body, dict) == {
        "error": {
            "message": "max_tokens must be positive",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "invalid_request",
        }
    }


def test_code_can_be_overridden_per_instance():
    assert InvalidRequestError("x", code="bad_stop").code == "bad_stop"


@pytest.mark.parametrize(("seconds", "header"), [(0.2, "1"), (1.0, "1"), (2.5, "3")])
def test_retry_after_is_whole_seconds_rounded_up(seconds, header):
    assert RateLimitError("slow down", retry_after=seconds).headers == {"Retry-After": header}


def test_no_retry_after_means_no_header():
    assert ServiceUnavailableError("busy").headers == {}


def test_error_from_envelope_picks_the_class_by_code():
    exc = error_from_envelope(507, ErrorDetail(message="no room", type="x", code="out_of_memory"))
    assert type(exc) is OutOfMemoryError
    assert exc.message == "no room"


def test_error_from_envelope_keeps_retry_after_and_param():
    detail = ErrorDetail(message="m", type="t", code="shutting_down", param="p")
    exc = error_from_envelope(503, detail, retry_after=5)
    assert isinstance(exc, ShuttingDownError)
    assert exc.param == "p"
    assert exc.headers == {"Retry-After": "5"}


def test_error_from_envelope_falls_back_to_the_status():
    exc = error_from_envelope(409, ErrorDetail(message="m", type="t", code="something_new"))
    assert type(exc) is ModelBusyError
    assert exc.code == "something_new"


def test_error_from_envelope_of_an_unknown_status_is_an_upstream_error():
    exc = error_from_envelope(418, ErrorDetail(message="teapot", type="t"))
    assert type(exc) is UpstreamError
    assert exc.code == "upstream_error"


def test_error_from_a_500_without_code_is_the_root():
    exc = error_from_envelope(500, ErrorDetail(message="m", type="t"))
    assert type(exc) is CortexError
    assert exc.status_code == 500


def test_envelope_decodes():
    raw = b'{"error": {"message": "m", "type": "t", "param": null, "code": "model_busy"}}'
    assert codec.decode(raw, ErrorEnvelope).error.code == "model_busy"
