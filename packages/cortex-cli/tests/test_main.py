import subprocess
import sys


def test_python_dash_m_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "cortex_cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage:" in result.stdout


def test_shell_completion_is_clicks_own() -> None:
    from click.testing import CliRunner

    from cortex_cli.main import main

    env = {"_CORTEX_COMPLETE": "bash_complete", "COMP_WORDS": "cortex no", "COMP_CWORD": "1"}
    result = CliRunner().invoke(main, [], env=env, prog_name="cortex")
    assert result.output.splitlines() == ["plain,nodes"]
