"""What the gateway knows of its neurons: one record per node and per model, kept by polling.

``node`` holds the state, ``poller`` refreshes it, ``catalogue`` says what the fleet can serve
under which names, ``views`` renders ``/health`` and ``/fleet``. Nothing here decides where a
request goes (that is :mod:`cortex_gateway.placement`) or calls a neuron except the poller.
"""
