"""Applying placement: routing a request to a node, and the loads and unloads it takes.

``routing`` asks the policy for a decision and carries it out; ``lifecycle`` talks to the
neurons' lifecycle API (single-flight loads, unloads, endpoints).
"""
