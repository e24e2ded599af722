"""The Anthropic Messages dialect: ``/v1/messages`` and ``/v1/messages/count_tokens``.

Neurons speak only OpenAI, so this dialect translates: ``types`` holds the Anthropic structs
(request, response, stream events, count_tokens, errors), ``translate`` turns a request into an
OpenAI chat body and an OpenAI answer back into a message, ``stream`` turns an OpenAI chunk
stream into Anthropic's event sequence, ``errors`` the error envelope, ``call`` the exchange's
:class:`~cortex_gateway.inference.dialect.Call` and ``count`` the token-counting route.

This package imports nothing at its top so that :mod:`cortex_gateway.errors` can use
``errors`` without a cycle.
"""
