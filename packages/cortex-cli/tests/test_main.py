import subprocess
import sys


def test_python_dash_m_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "cortex_cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage:" in result.stdout
