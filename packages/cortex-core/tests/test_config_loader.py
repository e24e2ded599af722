"""The loader's rules, on the real config structs: precedence, environment, paths, secrets."""

import os
from pathlib import Path

import pytest

from cortex_core.config import (
    ConfigError,
    DefaultModel,
    GatewayConfig,
    ModelsConfig,
    NeuronConfig,
    load,
    redacted,
)


def write(tmp_path: Path, text: str, name: str = "cortex.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_only():
    config = load(GatewayConfig, None, env_prefix="CORTEX", environ={})
    assert config == GatewayConfig()
    assert config.gateway.listen == "0.0.0.0:31313"


def test_file_overrides_defaults_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, '[gateway]\nlisten = "127.0.0.1:8000"\n')
    config = load(GatewayConfig, path, env_prefix="CORTEX", environ={})
    assert config.gateway.listen == "127.0.0.1:8000"
    assert config.gateway.metrics_listen == "0.0.0.0:31314"


def test_environment_overrides_the_file_and_flags_override_both(tmp_path):
    path = write(tmp_path, '[gateway]\nlisten = "127.0.0.1:8000"\npoll_interval_s = 5\n')
    env = {"CORTEX_GATEWAY__LISTEN": "127.0.0.1:9000", "CORTEX_GATEWAY__POLL_INTERVAL_S": "0.5"}
    config = load(GatewayConfig, path, env_prefix="CORTEX", environ=env)
    assert config.gateway.listen == "127.0.0.1:9000"
    assert config.gateway.poll_interval_s == 0.5
    flagged = load(
        GatewayConfig,
        path,
        env_prefix="CORTEX",
        environ=env,
        overrides={"gateway.listen": "127.0.0.1:7000"},
    )
    assert flagged.gateway.listen == "127.0.0.1:7000"


def test_environment_strings_convert_to_the_key_type():
    env = {
        "NEURON__PORT": "8080",
        "NEURON_HARNESS__VLLM__ALLOW_DOWNLOAD": "true",
        "NEURON_HARNESS__VLLM__CPU_MEMORY_MB": "4096",
        "NEURON_HARNESS__VLLM__DRAIN_TIMEOUT_S": "2.5",
    }
    config = load(NeuronConfig, None, env_prefix="NEURON", environ=env)
    assert config.port == 8080
    assert config.harness.vllm.allow_download is True
    assert config.harness.vllm.cpu_memory_mb == 4096
    assert config.harness.vllm.drain_timeout_s == 2.5


def test_environment_arrays_and_tables_are_toml():
    env = {
        "NEURON_HARNESS__VLLM__MODEL_DIRS": '["/a", "/b"]',
        "NEURON_HARNESS__VLLM__ENGINE_ARGS": "{ enforce_eager = true, seed = 1 }",
    }
    config = load(NeuronConfig, None, env_prefix="NEURON", environ=env)
    assert config.harness.vllm.model_dirs == ("/a", "/b")
    assert config.harness.vllm.engine_args == {"enforce_eager": True, "seed": 1}


def test_environment_can_index_an_array_from_the_file(tmp_path):
    path = write(
        tmp_path,
        '[[neurons]]\nname = "a"\nendpoint = "http://a:1"\n'
        '[[neurons]]\nname = "b"\nendpoint = "http://b:1"\n'
        '[auth]\napi_keys = ["one"]\n',
    )
    env = {"CORTEX_NEURONS__1__TOKEN": "sekrit", "CORTEX_AUTH__API_KEYS__0": "two"}
    config = load(GatewayConfig, path, env_prefix="CORTEX", environ=env)
    assert [n.token for n in config.neurons] == ["", "sekrit"]
    assert config.auth.api_keys == ("two",)


def test_variables_without_a_double_underscore_are_not_config():
    env = {"CORTEX_URL": "http://x", "CORTEX_API_KEY": "k", "OTHER__THING": "1"}
    assert load(GatewayConfig, None, env_prefix="CORTEX", environ=env) == GatewayConfig()


def test_no_prefix_means_no_environment():
    env = {"CORTEX_GATEWAY__LISTEN": "nonsense"}
    assert load(GatewayConfig, None, environ=env) == GatewayConfig()


def test_the_process_environment_is_read_when_none_is_passed(monkeypatch):
    monkeypatch.setenv("CORTEX_GATEWAY__LISTEN", "127.0.0.1:1234")
    assert load(GatewayConfig, None, env_prefix="CORTEX").gateway.listen == "127.0.0.1:1234"
    assert "CORTEX_GATEWAY__LISTEN" in os.environ  # noqa: TID251 - the test's own setting


def test_top_level_key_from_the_environment(tmp_path):
    env = {"CORTEX__MODELS_CONFIG": "models.toml"}
    path = write(tmp_path, "")
    config = load(GatewayConfig, path, env_prefix="CORTEX", environ=env)
    assert config.models_config == str(tmp_path / "models.toml")


def test_relative_paths_resolve_against_the_file_folder(tmp_path):
    sub = tmp_path / "etc"
    sub.mkdir()
    path = write(
        sub,
        'auth_token_file = ""\n[harness.vllm]\nmodel_dirs = ["models", "/abs/models"]\n'
        'hf_cache = "cache"\n',
        "neuron.toml",
    )
    vllm = load(NeuronConfig, path, env_prefix="NEURON", environ={}).harness.vllm
    assert vllm.model_dirs == (str(sub / "models"), "/abs/models")
    assert vllm.hf_cache == str(sub / "cache")


def test_relative_paths_without_a_file_resolve_against_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"NEURON_HARNESS__VLLM__MODEL_DIRS": '["m"]'}
    config = load(NeuronConfig, None, env_prefix="NEURON", environ=env)
    assert config.harness.vllm.model_dirs == (str(tmp_path / "m"),)


def test_empty_paths_stay_empty(tmp_path):
    path = write(tmp_path, 'hf_cache = ""\n', "x.toml")
    path.write_text('[harness.vllm]\nhf_cache = ""\n')
    assert load(NeuronConfig, path, environ={}).harness.vllm.hf_cache == ""


def test_secret_from_a_file(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    path = write(tmp_path, 'auth_token_file = "token"\n', "neuron.toml")
    config = load(NeuronConfig, path, environ={})
    assert config.auth_token == "s3cret"
    assert config.auth_token_file == str(tmp_path / "token")


def test_key_files_add_to_the_listed_keys(tmp_path):
    (tmp_path / "keys").write_text("# clients\nk2\n\n  k3  \n")
    path = write(tmp_path, '[auth]\napi_keys = ["k1"]\napi_keys_file = "keys"\n')
    assert load(GatewayConfig, path, environ={}).auth.api_keys == ("k1", "k2", "k3")


def test_nested_secret_files(tmp_path):
    (tmp_path / "beast.token").write_text("tok")
    path = write(
        tmp_path,
        '[[neurons]]\nname = "beast"\nendpoint = "http://beast:13131"\n'
        'token_file = "beast.token"\n',
    )
    assert load(GatewayConfig, path, environ={}).neurons[0].token == "tok"


def test_redacted_hides_secrets_and_drops_nulls(tmp_path):
    (tmp_path / "keys").write_text("k2\n")
    path = write(
        tmp_path,
        '[auth]\napi_keys = ["k1"]\napi_keys_file = "keys"\n'
        '[[neurons]]\nname = "a"\nendpoint = "http://a:1"\ntoken = "t"\n'
        '[[neurons]]\nname = "b"\nendpoint = "http://b:1"\n',
    )
    table = redacted(load(GatewayConfig, path, environ={}))
    assert table["auth"]["api_keys"] == ["<redacted>", "<redacted>"]
    assert table["auth"]["admin_keys"] == []
    assert table["neurons"][0]["token"] == "<redacted>"
    assert table["neurons"][1]["token"] == ""
    assert "k1" not in repr(table)


def test_redacted_walks_default_models():
    config = NeuronConfig(
        default_models=(DefaultModel(model_id="m", devices=[0], engine_args={"seed": 1}),),
    )
    table = redacted(config)
    assert table["default_models"] == [
        {"model_id": "m", "harness": "vllm", "devices": [0], "engine_args": {"seed": 1}}
    ]


def test_redacted_models_config_is_plain_builtins():
    table = redacted(ModelsConfig())
    assert table == {"models": []}


class TestErrors:
    """Each class of mistake gives one message: the source, the key path, what was expected."""

    def test_missing_file(self, tmp_path):
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, tmp_path / "nope.toml", environ={})
        assert str(info.value) == f"{tmp_path / 'nope.toml'}: file not found"

    def test_a_folder_is_not_a_file(self, tmp_path):
        with pytest.raises(ConfigError, match="cannot read the file"):
            load(GatewayConfig, tmp_path, environ={})

    def test_not_utf8(self, tmp_path):
        path = tmp_path / "cortex.toml"
        path.write_bytes(b"listen = '\xff'\n")
        with pytest.raises(ConfigError, match="not UTF-8 text"):
            load(GatewayConfig, path, environ={})

    def test_toml_syntax_error_gives_the_line(self, tmp_path):
        path = write(tmp_path, '[gateway]\nlisten = "a:1"\npoll_interval_s = \n')
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, path, environ={})
        assert str(info.value).startswith(f"{path}: invalid TOML: ")
        assert "line 3" in str(info.value)

    def test_unknown_key_suggests_the_close_one(self, tmp_path):
        path = write(tmp_path, '[gateway]\nlistn = "a:1"\n')
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, path, environ={})
        assert str(info.value) == f"{path}: gateway.listn: unknown key (did you mean `listen`?)"
        assert info.value.key == "gateway.listn"

    def test_unknown_key_lists_the_known_ones(self, tmp_path):
        path = write(tmp_path, "[eviction]\nzzz = 1\n")
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, path, environ={})
        assert "eviction.zzz: unknown key (known keys: strategy, defrag_after_cycles" in str(
            info.value
        )

    def test_unknown_top_level_key(self, tmp_path):
        path = write(tmp_path, "model_config = 'm.toml'\n")
        with pytest.raises(ConfigError, match=r"model_config: unknown key \(did you mean"):
            load(GatewayConfig, path, environ={})

    def test_unknown_key_in_an_array_of_tables(self, tmp_path):
        path = write(tmp_path, '[[default_models]]\nmodel_id = "m"\nmemory = 5\n', "n.toml")
        with pytest.raises(ConfigError) as info:
            load(NeuronConfig, path, environ={})
        assert info.value.key == "default_models[0].memory"
        assert "did you mean `memory_mb`?" in info.value.problem

    def test_wrong_type(self, tmp_path):
        path = write(tmp_path, '[gateway]\npoll_interval_s = "fast"\n')
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, path, environ={})
        assert str(info.value) == (f"{path}: gateway.poll_interval_s: expected `float`, got `str`")

    def test_out_of_range(self, tmp_path):
        path = write(tmp_path, "[gateway]\nidle_timeout_s = 0\n")
        with pytest.raises(ConfigError, match=r"gateway.idle_timeout_s: expected `float` > 0"):
            load(GatewayConfig, path, environ={})

    def test_not_one_of_the_choices(self, tmp_path):
        path = write(tmp_path, '[eviction]\nstrategy = "random"\n')
        with pytest.raises(ConfigError, match=r"eviction.strategy: invalid enum value 'random'"):
            load(GatewayConfig, path, environ={})

    def test_missing_required_key(self, tmp_path):
        path = write(tmp_path, '[[neurons]]\nname = "a"\n')
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, path, environ={})
        assert str(info.value) == f"{path}: neurons[0].endpoint: required key is missing"

    def test_a_table_where_a_value_belongs(self, tmp_path):
        path = write(tmp_path, "[gateway.listen]\nhost = 1\n")
        with pytest.raises(ConfigError, match=r"gateway.listen: expected `str`, got `object`"):
            load(GatewayConfig, path, environ={})

    def test_bad_environment_value_names_the_variable(self, tmp_path):
        path = write(tmp_path, "")
        env = {"CORTEX_GATEWAY__MAX_BODY_BYTES": "lots"}
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, path, env_prefix="CORTEX", environ=env)
        assert str(info.value) == (
            "environment variable CORTEX_GATEWAY__MAX_BODY_BYTES: gateway.max_body_bytes: "
            "expected `int`, got `str`"
        )

    def test_unknown_environment_key_names_the_variable(self):
        env = {"CORTEX_GATEWAY__LISTN": "a:1"}
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, None, env_prefix="CORTEX", environ=env)
        assert info.value.source == "environment variable CORTEX_GATEWAY__LISTN"
        assert info.value.key == "gateway.listn"

    def test_unknown_environment_section(self):
        env = {"NEURON_HARNES__VLLM__CPU_MEMORY_MB": "1"}
        with pytest.raises(ConfigError, match="NEURON_HARNES__VLLM__CPU_MEMORY_MB: harnes"):
            load(NeuronConfig, None, env_prefix="NEURON", environ=env)

    def test_malformed_variable_name(self):
        env = {"CORTEX_GATEWAY____LISTEN": "a:1"}
        with pytest.raises(ConfigError, match="expected CORTEX_SECTION__KEY"):
            load(GatewayConfig, None, env_prefix="CORTEX", environ=env)

    def test_environment_override_through_a_value(self, tmp_path):
        path = write(tmp_path, 'models_config = "m.toml"\n')
        env = {"CORTEX__MODELS_CONFIG__X": "1"}
        with pytest.raises(ConfigError, match="models_config is not a table"):
            load(GatewayConfig, path, env_prefix="CORTEX", environ=env)

    def test_environment_index_out_of_range(self):
        env = {"CORTEX_NEURONS__3__TOKEN": "t"}
        with pytest.raises(ConfigError, match=r"neurons\[3\].token: neurons has no item 3"):
            load(GatewayConfig, None, env_prefix="CORTEX", environ=env)

    def test_environment_index_at_the_top(self):
        env = {"CORTEX__0": "t"}
        with pytest.raises(ConfigError, match="the top level has no item 0"):
            load(GatewayConfig, None, env_prefix="CORTEX", environ=env)

    def test_environment_toml_that_does_not_parse(self):
        env = {"NEURON_HARNESS__VLLM__MODEL_DIRS": "[unclosed"}
        with pytest.raises(ConfigError, match="not a valid TOML array or table"):
            load(NeuronConfig, None, env_prefix="NEURON", environ=env)

    def test_bad_flag_is_blamed_on_the_command_line(self):
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, None, overrides={"gateway.listen": "nowhere"})
        assert info.value.source == "command line"
        assert info.value.key == "gateway.listen"

    def test_missing_secret_file(self, tmp_path):
        path = write(tmp_path, 'auth_token_file = "missing"\n', "n.toml")
        with pytest.raises(ConfigError) as info:
            load(NeuronConfig, path, environ={})
        assert info.value.key == "auth_token_file"
        assert "cannot read secret file" in info.value.problem
        assert "No such file or directory" in info.value.problem

    def test_secret_file_not_utf8(self, tmp_path):
        (tmp_path / "token").write_bytes(b"\xff\xfe")
        path = write(tmp_path, 'auth_token_file = "token"\n', "n.toml")
        with pytest.raises(ConfigError, match="not UTF-8 text"):
            load(NeuronConfig, path, environ={})

    def test_empty_secret_file(self, tmp_path):
        (tmp_path / "token").write_text("\n")
        path = write(tmp_path, 'auth_token_file = "token"\n', "n.toml")
        with pytest.raises(ConfigError, match="is empty"):
            load(NeuronConfig, path, environ={})

    def test_key_file_without_keys(self, tmp_path):
        (tmp_path / "keys").write_text("# nobody yet\n")
        path = write(tmp_path, '[auth]\nadmin_keys_file = "keys"\n')
        with pytest.raises(ConfigError) as info:
            load(GatewayConfig, path, environ={})
        assert info.value.key == "auth.admin_keys_file"
        assert "holds no keys" in info.value.problem

    def test_secret_and_secret_file_both_set(self, tmp_path):
        (tmp_path / "token").write_text("a")
        path = write(tmp_path, 'auth_token = "b"\nauth_token_file = "token"\n', "n.toml")
        with pytest.raises(ConfigError, match="set either `auth_token` or `auth_token_file`"):
            load(NeuronConfig, path, environ={})
