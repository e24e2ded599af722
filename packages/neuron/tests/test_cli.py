import json
import signal
import subprocess
import sys
import tomllib

import httpx
from click.testing import CliRunner

from cortex_neuron.cli import main


def test_config_check_prints_the_effective_configuration_redacted(tmp_path):
    (tmp_path / "token").write_text("very-secret\n")
    (tmp_path / "neuron.toml").write_text(
        'auth_token_file = "token"\n[harness.vllm]\nmodel_dirs = ["models"]\n'
    )
    result = CliRunner().invoke(
        main,
        ["config", "check", "-c", str(tmp_path / "neuron.toml")],
        env={"NEURON_HARNESS__VLLM__CPU_MEMORY_MB": "2048"},
    )
    assert result.exit_code == 0, result.output
    assert "very-secret" not in result.output
    printed = tomllib.loads(result.output)
    assert printed["auth_token"] == "<redacted>"
    assert printed["harness"]["vllm"]["model_dirs"] == [str(tmp_path / "models")]
    assert printed["harness"]["vllm"]["cpu_memory_mb"] == 2048


def test_config_check_reports_the_error_and_exits_1(tmp_path):
    (tmp_path / "neuron.toml").write_text("prot = 1\n")
    result = CliRunner().invoke(main, ["config", "check", "-c", str(tmp_path / "neuron.toml")])
    assert result.exit_code == 1
    assert "prot: unknown key (did you mean `port`?)" in result.output


def test_python_dash_m_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "cortex_neuron", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "neuron, version 0.1.0" in result.stdout


def test_discover_prints_the_discovery_document(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["discover"])
    assert result.exit_code == 0, result.output
    discovery = json.loads(result.output)
    assert discovery["harnesses"] == ["vllm"]
    assert discovery["devices"][0]["kind"] in ("gpu", "cpu")
    assert discovery["hostname"]


def test_discover_uses_the_cpu_pool_of_the_config(tmp_path):
    (tmp_path / "neuron.toml").write_text("[harness.vllm]\ncpu_memory_mb = 1234\n")
    result = CliRunner().invoke(main, ["discover", "-c", str(tmp_path / "neuron.toml")])
    device = json.loads(result.output)["devices"][0]
    assert device["kind"] == "gpu" or device["memory_total_mb"] == 1234


def test_config_check_refuses_engine_args_off_the_allow_list(tmp_path):
    (tmp_path / "neuron.toml").write_text(
        '[harness.vllm]\nengine_args = { model = "/etc/passwd" }\n'
        '[[default_models]]\nmodel_id = "m"\nengine_args = { trust_remote_code = true }\n'
    )
    result = CliRunner().invoke(main, ["config", "check", "-c", str(tmp_path / "neuron.toml")])
    assert result.exit_code == 1
    assert "harness.vllm.engine_args: engine_args ['model'] are not allowed" in result.output
    assert "default_models[0].engine_args: engine_args ['trust_remote_code']" in result.output


def test_config_check_reads_neuron_toml_of_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "neuron.toml").write_text("port = 1234\n")
    result = CliRunner().invoke(main, ["config", "check"])
    assert result.exit_code == 0
    assert "port = 1234" in result.output


def test_serve_answers_then_exits_0_on_sigterm(tmp_path):
    (tmp_path / "neuron.toml").write_text(
        f'[harness.vllm]\nmodel_dirs = ["{tmp_path}"]\ncpu_memory_mb = 512\n'
    )
    command = [sys.executable, "-m", "cortex_neuron", "serve", "-c", str(tmp_path / "neuron.toml")]
    command += ["--host", "127.0.0.1", "--port", "0", "--log-format", "json"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            url = _listening_url(process)
            health = httpx.get(f"{url}/health", timeout=10).json()
            assert health["draining"] is False
            missing = httpx.post(f"{url}/models/load", json={"model_id": "org/x"}, timeout=10)
            assert missing.json()["error"]["code"] == "model_not_found"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()


def _listening_url(process):
    assert process.stderr is not None
    for line in process.stderr:
        if "listening on" in line:
            return json.loads(line)["message"].removeprefix("listening on ")
    raise AssertionError("the neuron never said where it listens")
