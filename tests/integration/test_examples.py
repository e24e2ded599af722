"""The example configs at the repository root: they load, and they say what `config init` writes."""

from pathlib import Path

from click.testing import CliRunner

from cortex_cli.main import main as cortex
from cortex_cli.starter import CORTEX_TOML, MODELS_TOML
from cortex_core.config import NeuronConfig, load, load_gateway_config
from cortex_neuron.cli import main as neuron

ROOT = Path(__file__).parents[2]


def test_gateway_examples_are_the_starter_files():
    assert (ROOT / "models.example.toml").read_text() == MODELS_TOML
    assert (ROOT / "cortex.example.toml").read_text() == CORTEX_TOML.replace(
        'models_config = "models.toml"', 'models_config = "models.example.toml"'
    )


def test_gateway_examples_load():
    config, models = load_gateway_config(ROOT / "cortex.example.toml", environ={})
    assert config.models_config == str(ROOT / "models.example.toml")
    assert [n.name for n in config.neurons] == ["local"]
    assert [m.id for m in models.models] == ["Qwen/Qwen3-0.6B"]
    assert models.models[0].aliases == ("small",)


def test_neuron_example_loads():
    config = load(NeuronConfig, ROOT / "neuron.example.toml", environ={})
    assert config.port == 13131
    assert config.harness.vllm.engine_args == {"enforce_eager": False}
    assert [m.model_id for m in config.default_models] == ["Qwen/Qwen3-0.6B"]


def test_cli_checks_pass_on_the_examples():
    runner = CliRunner()
    result = runner.invoke(cortex, ["config", "check", "-c", str(ROOT / "cortex.example.toml")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(neuron, ["config", "check", "-c", str(ROOT / "neuron.example.toml")])
    assert result.exit_code == 0, result.output
