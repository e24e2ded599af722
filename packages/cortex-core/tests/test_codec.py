import msgspec
import pytest

from cortex_core import codec
from cortex_core.errors import InvalidRequestError
from cortex_core.wire.control import ModelSpec, UnloadRequest


def test_round_trip():
    spec = ModelSpec(model_id="a/b", memory_mb=10)
    assert codec.decode(codec.encode(spec), ModelSpec) == spec


def test_decoders_are_built_once_per_type():
    codec.decode(b'{"model_id": "a"}', UnloadRequest)
    first = codec._decoders[UnloadRequest]
    codec.decode(b'{"model_id": "b"}', UnloadRequest)
    assert codec._decoders[UnloadRequest] is first


def test_malformed_json_is_an_invalid_request():
    with pytest.raises(InvalidRequestError, match="not valid JSON") as info:
        codec.decode(b'{"model_id": ', ModelSpec)
    assert info.value.status_code == 400


def test_wrong_type_names_the_field():
    with pytest.raises(InvalidRequestError) as info:
        codec.decode(b'{"model_id": "a", "memory_mb": "lots"}', ModelSpec)
    assert info.value.param == "memory_mb"
    assert "Expected `int | null`, got `str`" in info.value.message


def test_missing_field_at_the_top_has_no_param():
    with pytest.raises(InvalidRequestError) as info:
        codec.decode(b"{}", ModelSpec)
    assert info.value.param is None
    assert "model_id" in info.value.message


def test_wrong_top_level_shape_has_no_param():
    with pytest.raises(InvalidRequestError) as info:
        codec.decode(b"[1, 2]", ModelSpec)
    assert info.value.param is None


def test_nested_path():
    class Outer(msgspec.Struct):
        specs: list[ModelSpec]

    with pytest.raises(InvalidRequestError) as info:
        codec.decode(b'{"specs": [{"model_id": 1}]}', Outer)
    assert info.value.param == "specs[0].model_id"


def test_convert_validates_builtins():
    assert codec.convert({"model_id": "x"}, UnloadRequest) == UnloadRequest(model_id="x")
    with pytest.raises(InvalidRequestError) as info:
        codec.convert({"model_id": "x", "drain": "yes"}, UnloadRequest)
    assert info.value.param == "drain"
