"""``python -m cortex_neuron`` is the ``neuron`` command."""

from cortex_neuron.cli import main

main()
