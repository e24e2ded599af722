"""The error tree shared by the gateway and the neuron, and the OpenAI error envelope.

Every error a client or a peer can see is a :class:`CortexError`. Its class fixes the HTTP
status and the envelope's ``type``; its ``code`` is the string a program branches on (the
codes of DESIGN §3 and §6). Classes marked *remote* mean that a neuron misbehaved or could
not be reached; every other class means the caller (or this process) is at fault::

    CortexError
    ├── InvalidRequestError ............... 400 invalid_request
    │   ├── InvalidModelIdError ........... 400 invalid_model_id
    │   ├── InvalidSpecError .............. 400 invalid_spec
    │   └── ContextLengthExceededError .... 400 context_length_exceeded
    ├── AuthenticationError ............... 401 invalid_api_key
    ├── PermissionDeniedError ............. 403 permission_denied
    ├── NotFoundError ..................... 404 not_found
    │   ├── ModelNotFoundError ............ 404 model_not_found
    │   └── ModelNotLoadedError ........... 404 model_not_loaded
    ├── ModelBusyError .................... 409 model_busy
    ├── RequestTooLargeError .............. 413 request_too_large
    ├── UnsupportedModelError ............. 422 unsupported_model
    ├── RateLimitError .................... 429 rate_limit_exceeded
    ├── ServiceUnavailableError ........... 503 service_unavailable
    │   └── ShuttingDownError ............. 503 shutting_down
    ├── OutOfMemoryError .................. 507 out_of_memory
    ├── EngineError ....................... 500 internal_error
    │   ├── LoadFailedError ............... 500 load_failed
    │   └── EngineFailedError ............. 503 engine_failed
    └── UpstreamError (remote) ............ 502 upstream_error
        ├── UpstreamTimeoutError (remote) . 504 upstream_timeout
        └── UpstreamUnavailableError (remote) 503 upstream_unavailable

This module builds envelopes; it never decides how a server sends them.
"""

import math
from typing import ClassVar

import msgspec

__all__ = [
    "AuthenticationError",
    "ContextLengthExceededError",
    "CortexError",
    "EngineError",
    "EngineFailedError",
    "ErrorDetail",
    "ErrorEnvelope",
    "InvalidModelIdError",
    "InvalidRequestError",
    "InvalidSpecError",
    "LoadFailedError",
    "ModelBusyError",
    "ModelNotFoundError",
    "ModelNotLoadedError",
    "NotFoundError",
    "OutOfMemoryError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "ShuttingDownError",
    "UnsupportedModelError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "error_from_envelope",
    "to_envelope",
]


class ErrorDetail(msgspec.Struct, kw_only=True):
    """The inside of an OpenAI error envelope; ``code`` is a string, never vLLM's integer."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct, kw_only=True):
    """``{"error": {...}}``, the body of every error answer on an OpenAI-shaped route."""

    error: ErrorDetail


class CortexError(Exception):
    """Root of every error that crosses an HTTP boundary.

    Args:
        message: What went wrong, for a person; never a traceback.
        code: Overrides the class's default code.
        param: The request field at fault, when there is one.
        retry_after: Seconds a client should wait before retrying (sent as ``Retry-After``).
    """

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers that belong with this error (``Retry-After`` in whole seconds)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class InvalidRequestError(CortexError):
    """The request is malformed or asks for something impossible."""

    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class InvalidModelIdError(InvalidRequestError):
    """A model id does not follow the grammar of :mod:`cortex_core.ids`."""

    default_code = "invalid_model_id"


class InvalidSpecError(InvalidRequestError):
    """A load specification is inconsistent or asks for a setting that is not allowed."""

    default_code = "invalid_spec"


class ContextLengthExceededError(InvalidRequestError):
    """The prompt alone is longer than the model's context."""

    default_code = "context_length_exceeded"


class AuthenticationError(CortexError):
    """No key, or a key that is not known."""

    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(CortexError):
    """A known key without the right for this route."""

    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(CortexError):
    """No such route or resource."""

    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    """Nobody knows this model: not in the fleet, the model dirs or the cache."""

    default_code = "model_not_found"


class ModelNotLoadedError(NotFoundError):
    """The model is known here but not loaded (the gateway re-routes once)."""

    default_code = "model_not_loaded"


class ModelBusyError(CortexError):
    """The model has requests in flight, so it cannot be unloaded now."""

    status_code = 409
    error_type = "conflict_error"
    default_code = "model_busy"


class RequestTooLargeError(CortexError):
    """The request body is larger than the configured limit."""

    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedModelError(CortexError):
    """The engine cannot run this model (architecture, quantisation); retrying will not help."""

    status_code = 422
    error_type = "invalid_request_error"
    default_code = "unsupported_model"


class RateLimitError(CortexError):
    """Too many requests are waiting for this model; retry after ``Retry-After``."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class ServiceUnavailableError(CortexError):
    """No capacity right now; retry after ``Retry-After``."""

    status_code = 503
    error_type = "service_unavailable_error"
    default_code = "service_unavailable"


class ShuttingDownError(ServiceUnavailableError):
    """The process is draining before it exits; go elsewhere."""

    default_code = "shutting_down"


class OutOfMemoryError(CortexError):
    """The model does not fit the device memory that is free now."""

    status_code = 507
    error_type = "capacity_error"
    default_code = "out_of_memory"


class EngineError(CortexError):
    """The inference engine failed in a way the caller did not cause."""


class LoadFailedError(EngineError):
    """Loading a model failed for a reason not covered by a more precise error."""

    default_code = "load_failed"


class EngineFailedError(EngineError):
    """The engine serving the model died; the model is marked failed."""

    status_code = 503
    default_code = "engine_failed"


class UpstreamError(CortexError):
    """A neuron answered something unusable (remote fault)."""

    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    """A neuron did not answer in time (remote fault)."""

    status_code = 504
    default_code = "upstream_timeout"


class UpstreamUnavailableError(UpstreamError):
    """A neuron could not be reached (remote fault)."""

    status_code = 503
    default_code = "upstream_unavailable"


def to_envelope(exc: CortexError) -> ErrorEnvelope:
    """The OpenAI error envelope for ``exc``."""
    return ErrorEnvelope(
        error=ErrorDetail(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code)
    )


def _subclasses(cls: type[CortexError]) -> list[type[CortexError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


_ERROR_CLASSES = _subclasses(CortexError)


def error_from_envelope(
    status: int, detail: ErrorDetail, *, retry_after: float | None = None
) -> CortexError:
    """Rebuild the error a peer sent, so that code can branch on its class.

    The class is the one whose default code matches ``detail.code``; failing that, the most
    general class with the status; failing that, :class:`UpstreamError`. The peer's message,
    code and param are kept as they were sent.
    """
    by_code = [c for c in _ERROR_CLASSES if c.default_code == detail.code]
    by_status = [c for c in _ERROR_CLASSES if c.status_code == status]
    cls = (by_code or by_status or [UpstreamError])[0]
    return cls(detail.message, code=detail.code, param=detail.param, retry_after=retry_after)
