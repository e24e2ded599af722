"""Wire types: the JSON the gateway, the neuron and clients exchange, as msgspec structs.

- :mod:`cortex_core.wire.control`: the neuron's lifecycle API;
- :mod:`cortex_core.wire.inference`: the OpenAI inference fields both sides read;
- :mod:`cortex_core.wire.models`: the OpenAI model list.
"""
