"""neuron.toml: every key."""

import pytest

from cortex_core.config import ConfigError, DefaultModel, NeuronConfig, VllmOptions, load

EVERY_KEY = """
host = "127.0.0.1"
port = 14000
auth_token = "tok"
auth_token_file = ""
[harness.vllm]
model_dirs = ["/srv/models", "more"]
hf_cache = "/srv/hf"
allow_download = true
allow_trust_remote_code = true
cpu_memory_mb = 2048
default_memory_mb = 1024
engine_args = { enforce_eager = true }
max_queued_per_model = 8
drain_timeout_s = 5
[[default_models]]
model_id = "Qwen/Qwen3-0.6B"
harness = "vllm"
memory_mb = 9000
devices = [0, 1]
tensor_parallel = 2
max_model_len = 4096
quant = "fp8"
tool_call_parser = "hermes"
reasoning_parser = "qwen3"
chat_template = "{{ messages }}"
engine_args = { seed = 3 }
[[default_models]]
model_id = "tiny"
"""


def test_every_key(tmp_path):
    path = tmp_path / "neuron.toml"
    path.write_text(EVERY_KEY)
    config = load(NeuronConfig, path, env_prefix="NEURON", environ={})
    assert (config.host, config.port, config.auth_token) == ("127.0.0.1", 14000, "tok")
    assert config.harness.vllm == VllmOptions(
        model_dirs=("/srv/models", str(tmp_path / "more")),
        hf_cache="/srv/hf",
        allow_download=True,
        allow_trust_remote_code=True,
        cpu_memory_mb=2048,
        default_memory_mb=1024,
        engine_args={"enforce_eager": True},
        max_queued_per_model=8,
        drain_timeout_s=5,
    )
    assert config.default_models == (
        DefaultModel(
            model_id="Qwen/Qwen3-0.6B",
            harness="vllm",
            memory_mb=9000,
            devices=[0, 1],
            tensor_parallel=2,
            max_model_len=4096,
            quant="fp8",
            tool_call_parser="hermes",
            reasoning_parser="qwen3",
            chat_template="{{ messages }}",
            engine_args={"seed": 3},
        ),
        DefaultModel(model_id="tiny"),
    )


def test_defaults():
    config = NeuronConfig()
    assert (config.host, config.port) == ("0.0.0.0", 13131)
    assert config.harness.vllm.model_dirs == ("/var/lib/neuron/models",)
    assert config.harness.vllm.max_queued_per_model == 64
    assert config.default_models == ()


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ("port = 70000\n", "port", "<= 65535"),
        ('[[default_models]]\nmodel_id = "/etc/passwd"\n', "default_models[0].model_id", "valid"),
        (
            '[[default_models]]\nmodel_id = "m"\nmemory_mb = "x"\n',
            "default_models[0].memory_mb",
            "`str`",
        ),
        ("[harness.vllm]\ncpu_memory_mb = -1\n", "harness.vllm.cpu_memory_mb", ">= 0"),
        ("[harness.tgi]\n", "harness.tgi", "unknown key (known keys: vllm)"),
    ],
)
def test_mistakes(tmp_path, toml, key, problem):
    path = tmp_path / "neuron.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load(NeuronConfig, path, environ={})
    assert info.value.key == key
    assert problem in info.value.problem
