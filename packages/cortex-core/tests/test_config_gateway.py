"""cortex.toml and models.toml: every key, and the checks that span keys or files."""

from pathlib import Path

import pytest

from cortex_core.config import (
    ConfigError,
    GatewayConfig,
    ModelProfile,
    ModelsConfig,
    NeuronPeer,
    load,
    load_gateway_config,
)

EVERY_KEY = """
models_config = "models.toml"
[gateway]
listen = "127.0.0.1:4000"
metrics_listen = "[::1]:4001"
poll_interval_s = 0.5
load_timeout_s = 60
idle_timeout_s = 30
request_timeout_s = 90
max_body_bytes = 1024
[eviction]
strategy = "priority"
defrag_after_cycles = 0
idle_ttl_s = 600
lifecycle = false
[auth]
api_keys = ["client"]
admin_keys = ["admin"]
api_keys_file = ""
admin_keys_file = ""
[[neurons]]
name = "beast"
endpoint = "http://beast.internal:13131"
token = "t"
token_file = ""
[[neurons]]
name = "runt"
endpoint = "https://runt:443/"
"""

EVERY_MODEL_KEY = """
[[models]]
id = "Qwen/Qwen3-0.6B"
harness = "vllm"
vram_mb = 9000
min_devices = 2
min_device_vram_mb = 4000
pinned_on = ["beast"]
priority = 7
aliases = ["small", "qwen"]
max_model_len = 8192
tool_call_parser = "hermes"
reasoning_parser = "qwen3"
chat_template = "templates/qwen.jinja"
engine_args = { enforce_eager = true }
[[models]]
id = "tiny"
"""


@pytest.fixture
def every_key(tmp_path: Path) -> Path:
    (tmp_path / "models.toml").write_text(EVERY_MODEL_KEY)
    path = tmp_path / "cortex.toml"
    path.write_text(EVERY_KEY)
    return path


def test_every_gateway_key(every_key):
    config, _ = load_gateway_config(every_key, environ={})
    assert config.models_config == str(every_key.parent / "models.toml")
    g = config.gateway
    assert (g.listen, g.metrics_listen) == ("127.0.0.1:4000", "[::1]:4001")
    assert (g.poll_interval_s, g.load_timeout_s) == (0.5, 60)
    assert (g.idle_timeout_s, g.request_timeout_s, g.max_body_bytes) == (30, 90, 1024)
    e = config.eviction
    assert (e.strategy, e.defrag_after_cycles, e.idle_ttl_s, e.lifecycle) == (
        "priority",
        0,
        600,
        False,
    )
    assert (config.auth.api_keys, config.auth.admin_keys) == (("client",), ("admin",))
    assert [(n.name, n.base_url, n.token) for n in config.neurons] == [
        ("beast", "http://beast.internal:13131", "t"),
        ("runt", "https://runt:443", ""),
    ]


def test_every_model_key(every_key):
    _, models = load_gateway_config(every_key, environ={})
    qwen, tiny = models.models
    assert qwen == ModelProfile(
        id="Qwen/Qwen3-0.6B",
        harness="vllm",
        vram_mb=9000,
        min_devices=2,
        min_device_vram_mb=4000,
        pinned_on=("beast",),
        priority=7,
        aliases=("small", "qwen"),
        max_model_len=8192,
        tool_call_parser="hermes",
        reasoning_parser="qwen3",
        chat_template=str(every_key.parent / "templates" / "qwen.jinja"),
        engine_args={"enforce_eager": True},
    )
    assert tiny == ModelProfile(id="tiny")
    assert tiny.vram_mb is None


def test_gateway_environment_prefix_is_cortex(every_key):
    config, _ = load_gateway_config(
        every_key, environ={"CORTEX_EVICTION__LIFECYCLE": "true"}, overrides={}
    )
    assert config.eviction.lifecycle is True


def test_without_models_config_there_are_no_models(tmp_path):
    path = tmp_path / "cortex.toml"
    path.write_text("")
    config, models = load_gateway_config(path, environ={})
    assert config.models_config == ""
    assert models == ModelsConfig()


def test_missing_models_file_names_it(tmp_path):
    path = tmp_path / "cortex.toml"
    path.write_text('models_config = "nope.toml"\n')
    with pytest.raises(ConfigError, match=r"nope.toml: file not found"):
        load_gateway_config(path, environ={})


def test_pin_on_an_unknown_node(tmp_path):
    (tmp_path / "models.toml").write_text('[[models]]\nid = "m"\npinned_on = ["ghost"]\n')
    path = tmp_path / "cortex.toml"
    path.write_text('models_config = "models.toml"\n')
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, environ={})
    assert info.value.key == "models[0].pinned_on"
    assert "'ghost' is not a neuron of" in info.value.problem


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ('[gateway]\nlisten = "31313"\n', "gateway.listen", "expected HOST:PORT, got '31313'"),
        ('[gateway]\nlisten = "h:99999"\n', "gateway.listen", "expected HOST:PORT"),
        ('[gateway]\nlisten = "h:http"\n', "gateway.listen", "expected HOST:PORT"),
        ('[gateway]\nmetrics_listen = ":1"\n', "gateway.metrics_listen", "expected HOST:PORT"),
        ("[gateway]\nmax_body_bytes = 0\n", "gateway.max_body_bytes", "expected `int` >= 1"),
        ("[eviction]\ndefrag_after_cycles = -1\n", "eviction.defrag_after_cycles", ">= 0"),
        ('[auth]\napi_keys = "k"\n', "auth.api_keys", "expected `array`, got `str`"),
        (
            '[[neurons]]\nname = "a/b"\nendpoint = "http://x:1"\n',
            "neurons[0].name",
            "not a valid node name",
        ),
        (
            '[[neurons]]\nname = ".."\nendpoint = "http://x:1"\n',
            "neurons[0].name",
            "not a valid node name",
        ),
        (
            '[[neurons]]\nname = "a"\nendpoint = "beast:13131"\n',
            "neurons[0].endpoint",
            "expected http://HOST:PORT",
        ),
        (
            '[[neurons]]\nname = "a"\nendpoint = "http://"\n',
            "neurons[0].endpoint",
            "expected http://HOST:PORT",
        ),
        (
            '[[neurons]]\nname = "a"\nendpoint = "http://x:1/v1"\n',
            "neurons[0].endpoint",
            "expected http://HOST:PORT",
        ),
        (
            '[[neurons]]\nname = "a"\nendpoint = "http://x:1"\n'
            '[[neurons]]\nname = "a"\nendpoint = "http://y:1"\n',
            "neurons",
            "two neurons are named 'a'",
        ),
    ],
)
def test_gateway_mistakes(tmp_path, toml, key, problem):
    path = tmp_path / "cortex.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load(GatewayConfig, path, environ={})
    assert info.value.source == str(path)
    assert info.value.key == key
    assert problem in info.value.problem


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ('[[models]]\nid = "../etc"\n', "models[0].id", "is not a valid model id"),
        ('[[models]]\nid = "a/b/c"\n', "models[0].id", "is not a valid model id"),
        ('[[models]]\nid = "m"\naliases = ["/x"]\n', "models[0].aliases", "'/x' is not a valid"),
        ('[[models]]\nid = "m"\nharness = "tgi"\n', "models[0].harness", "invalid enum value"),
        ('[[models]]\nid = "m"\nmin_devices = 0\n', "models[0].min_devices", ">= 1"),
        ('[[models]]\nid = "m"\nvram_mb = -5\n', "models[0].vram_mb", ">= 1"),
        ('[[models]]\nid = "m"\n[[models]]\nid = "m"\n', "models", "'m' names two models"),
        (
            '[[models]]\nid = "m"\naliases = ["n"]\n[[models]]\nid = "n"\n',
            "models",
            "'n' names two models",
        ),
        ("[[models]]\nvram_mb = 1\n", "models[0].id", "required key is missing"),
    ],
)
def test_models_mistakes(tmp_path, toml, key, problem):
    path = tmp_path / "models.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load(ModelsConfig, path)
    assert info.value.key == key
    assert problem in info.value.problem


def test_base_url_drops_one_trailing_slash():
    assert NeuronPeer(name="a", endpoint="http://a:1/").base_url == "http://a:1"
