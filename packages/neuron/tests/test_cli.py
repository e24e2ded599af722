import subprocess
import sys
import tomllib

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
