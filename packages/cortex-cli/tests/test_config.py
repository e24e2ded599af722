import tomllib

from click.testing import CliRunner

from cortex_cli.main import main
from cortex_core.config import load_gateway_config


def test_init_writes_a_starter_that_loads(tmp_path):
    result = CliRunner().invoke(main, ["config", "init", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'cortex.toml'}" in result.output
    config, models = load_gateway_config(tmp_path / "cortex.toml", environ={})
    assert config.neurons[0].endpoint == "http://127.0.0.1:13131"
    assert models.models[0].id == "Qwen/Qwen3-0.6B"
    assert (tmp_path / "cortex.toml").read_text().startswith("# cortex.toml: ")


def test_init_writes_into_the_current_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["config", "init"]).exit_code == 0
    models = tomllib.loads((tmp_path / "models.toml").read_text())
    assert models["models"][0]["aliases"] == ["small"]


def test_init_refuses_to_overwrite(tmp_path):
    (tmp_path / "models.toml").write_text("# mine\n")
    result = CliRunner().invoke(main, ["config", "init", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "models.toml exists; use --force to overwrite" in result.output
    assert (tmp_path / "models.toml").read_text() == "# mine\n"
    assert not (tmp_path / "cortex.toml").exists()


def test_init_force_overwrites(tmp_path):
    (tmp_path / "models.toml").write_text("# mine\n")
    result = CliRunner().invoke(main, ["config", "init", "--dir", str(tmp_path), "--force"])
    assert result.exit_code == 0
    assert "[[models]]" in (tmp_path / "models.toml").read_text()


def test_check_prints_the_effective_configuration_redacted(tmp_path):
    (tmp_path / "keys").write_text("client-key-1\n")
    (tmp_path / "models.toml").write_text('[[models]]\nid = "m"\n')
    (tmp_path / "cortex.toml").write_text(
        'models_config = "models.toml"\n[auth]\napi_keys_file = "keys"\n'
        '[[neurons]]\nname = "beast"\nendpoint = "http://beast:13131"\ntoken = "neuron-tok"\n'
    )
    result = CliRunner().invoke(main, ["config", "check", "-c", str(tmp_path / "cortex.toml")])
    assert result.exit_code == 0, result.output
    assert "client-key-1" not in result.output
    assert "neuron-tok" not in result.output
    printed = tomllib.loads(result.output)
    assert printed["auth"]["api_keys"] == ["<redacted>"]
    assert printed["gateway"]["listen"] == "0.0.0.0:31313"
    assert printed["models"] == [
        {
            "id": "m",
            "harness": "vllm",
            "min_devices": 1,
            "min_device_vram_mb": 0,
            "pinned_on": [],
            "priority": 100,
            "aliases": [],
            "tool_call_parser": "",
            "reasoning_parser": "",
            "chat_template": "",
            "engine_args": {},
        }
    ]


def test_check_applies_environment_overrides(tmp_path):
    (tmp_path / "cortex.toml").write_text("")
    result = CliRunner().invoke(
        main,
        ["config", "check", "-c", str(tmp_path / "cortex.toml")],
        env={"CORTEX_GATEWAY__LISTEN": "127.0.0.1:1"},
    )
    assert result.exit_code == 0, result.output
    assert 'listen = "127.0.0.1:1"' in result.output
    assert "no models_config" in result.output


def test_check_reports_the_error_and_exits_1(tmp_path):
    (tmp_path / "cortex.toml").write_text("[gateway]\nlistn = 1\n")
    result = CliRunner().invoke(main, ["config", "check", "-c", str(tmp_path / "cortex.toml")])
    assert result.exit_code == 1
    assert "gateway.listn: unknown key (did you mean `listen`?)" in result.output


def test_check_of_a_missing_file(tmp_path):
    result = CliRunner().invoke(main, ["config", "check", "-c", str(tmp_path / "none.toml")])
    assert result.exit_code == 1
    assert "none.toml: file not found" in result.output


def test_version_and_help():
    runner = CliRunner()
    assert "cortex, version 0.1.0" in runner.invoke(main, ["--version"]).output
    assert "config" in runner.invoke(main, ["--help"]).output
