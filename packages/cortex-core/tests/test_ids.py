import pytest

from cortex_core.errors import InvalidModelIdError
from cortex_core.ids import check_model_id, is_model_id

GOOD = [
    "Qwen/Qwen3-0.6B",
    "name",
    "a",
    "org/name",
    "meta-llama/Llama-3.1-8B-Instruct",
    "x_y.z-1/A.b_c",
    "a" * 64,
    f"{'a' * 64}/{'b' * 64}",
    "a../b..",
]

BAD = [
    "",
    "..",
    "../x",
    "/etc",
    "/abs",
    "/etc/passwd",
    "a/b/c",
    "a/",
    "/a",
    "a//b",
    "org/..",
    "./x",
    ".hidden",
    "-flag",
    "_x",
    "a" * 65,
    "a" * 200,
    f"a/{'b' * 65}",
    "with space",
    "tab\tx",
    "trailing\n",
    "back\\slash",
    "a:b",
    "ünïcode",
    "a%2Fb",
    None,
    42,
    ["a"],
]


@pytest.mark.parametrize("value", GOOD)
def test_accepts(value):
    assert is_model_id(value)
    assert check_model_id(value) == value


@pytest.mark.parametrize("value", BAD)
def test_refuses(value):
    assert not is_model_id(value)
    with pytest.raises(InvalidModelIdError) as info:
        check_model_id(value)
    assert info.value.code == "invalid_model_id"
    assert info.value.status_code == 400
    assert "org/name" in info.value.message


def test_a_long_bad_id_is_cut_short_in_the_message():
    with pytest.raises(InvalidModelIdError) as info:
        check_model_id("x" * 5000)
    assert len(info.value.message) < 300
