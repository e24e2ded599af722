import pytest

from cortex_core.errors import ModelNotLoadedError, RateLimitError
from cortex_neuron.admission import Gate


async def test_counts_and_limits():
    released = []
    gate = Gate(2, 1, lambda: released.append(1))
    tickets = [gate.admit() for _ in range(3)]
    assert (gate.active, gate.in_flight, gate.queued) == (3, 2, 1)
    with pytest.raises(RateLimitError) as info:
        gate.admit()
    assert info.value.headers == {"Retry-After": "1"}
    tickets[0].release()
    tickets[0].release()
    assert (gate.active, gate.in_flight, gate.queued) == (2, 2, 0)
    assert released == [1]


async def test_closed_gate_refuses_with_its_error():
    gate = Gate(1, 0, lambda: None)
    gate.close(ModelNotLoadedError("gone"))
    with pytest.raises(ModelNotLoadedError):
        gate.admit()


async def test_wait_idle_and_abort():
    gate = Gate(1, 1, lambda: None)
    assert await gate.wait_idle(0.01)
    ticket = gate.admit()
    assert not await gate.wait_idle(0.01)
    gate.abort_all(ModelNotLoadedError("unloaded"))
    assert ticket.aborted.is_set()
    assert isinstance(ticket.abort_error, ModelNotLoadedError)
    ticket.release()
    assert await gate.wait_idle(0.01)
