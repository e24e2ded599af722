"""The client-facing inference routes: one dialect-neutral exchange, and a module per dialect.

``exchange`` moves a request to a neuron and its answer back (body limit, routing, retries
before the first byte, the client leaving); each dialect module (``openai``) knows its own
request view, answers, errors and stream handling. ``dialect`` says which dialect a path speaks.
"""
