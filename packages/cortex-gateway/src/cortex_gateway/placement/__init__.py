"""Where a model goes: an immutable snapshot of the fleet and the pure policy that reads it.

No I/O and no clock reads here: the caller builds the snapshot (with the time in it) and
applies the decision (:mod:`cortex_gateway.control`).
"""
