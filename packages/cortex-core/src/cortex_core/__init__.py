"""What the cortex gateway and the neuron share: config, wire types, errors, model ids.

A published contract: the names below are the public API. It depends on msgspec only and opens
no sockets; nothing happens at import time.
"""

from importlib.metadata import version

from cortex_core.codec import convert, decode, encode
from cortex_core.errors import CortexError, ErrorDetail, ErrorEnvelope, to_envelope
from cortex_core.ids import check_model_id, is_model_id

__all__ = [
    "CortexError",
    "ErrorDetail",
    "ErrorEnvelope",
    "__version__",
    "check_model_id",
    "convert",
    "decode",
    "encode",
    "is_model_id",
    "to_envelope",
]

__version__ = version("helexa-cortex-core")
