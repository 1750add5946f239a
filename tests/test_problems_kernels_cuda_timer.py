"""The TriMul checker's CUDA timer, tested without a GPU: a fake ``torch.cuda`` keeps a timeline per stream
(an event is reached when its stream has run everything queued before it; a device-wide synchronise waits
for every stream) and logs the order of calls. Work a kernel queues on a stream of its own must count."""

from __future__ import annotations

import pytest
import torch

from discover_ttt.problems.kernels import harness


class FakeGPU:
    """Times in µs. Each stream runs its queue in order; the host waits only when it synchronises."""

    def __init__(self):
        self.host_us = 0.0
        self.busy_until = {}  # stream -> when its last queued work ends
        self.log = []

    def launch(self, stream, us):
        start = max(self.host_us, self.busy_until.get(stream, 0.0))
        self.busy_until[stream] = start + us
        self.host_us += 5.0  # the launch itself
        self.log.append(("launch", stream, us))

    def synchronize(self, *args):
        assert not args, "the timer must synchronise the whole device, not one stream"
        self.host_us = max([self.host_us, *self.busy_until.values()])
        self.log.append(("synchronize",))

    def idle(self):
        return all(t <= self.host_us for t in self.busy_until.values())


@pytest.fixture
def gpu(monkeypatch):
    gpu = FakeGPU()

    class Event:
        def __init__(self, enable_timing=False):
            self.at = None

        def record(self, stream=None):
            self.at = max(gpu.host_us, gpu.busy_until.get(stream, 0.0))
            gpu.busy_until[stream] = self.at
            gpu.log.append(("record", self, stream))

        def elapsed_time(self, end):
            if self.at is None or end.at is None or max(self.at, end.at) > gpu.host_us:
                raise RuntimeError("elapsed_time: an event has not completed")
            return (end.at - self.at) / 1000.0

    monkeypatch.setattr(torch._C, "_CudaEventBase", Event, raising=False)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch._C, "_cuda_synchronize", gpu.synchronize, raising=False)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: "default")
    return gpu


def side_stream_kernel(gpu):
    """A kernel that queues 5 ms on a stream of its own and 1 ms on the current one, and returns at once."""

    def custom_kernel(data):
        gpu.log.append(("call",))
        gpu.launch("side", 5000.0)
        gpu.launch("default", 1000.0)
        gpu.log.append(("return",))
        return data

    return custom_kernel


def test_side_stream_work_is_timed(gpu):
    timer = harness._CudaTimer()  # captures the fake functions, as the candidate does before loading
    out, event_us = timer(side_stream_kernel(gpu), "data")
    assert out == "data"
    assert event_us >= 5000.0, f"the side stream's 5 ms escaped the events: {event_us} µs"
    assert event_us < 5000.0 + 50.0  # and only the launches and synchronises beyond it
    assert gpu.idle()  # every stream has finished when the timer hands the output back


def test_the_end_event_follows_a_device_wide_synchronise(gpu):
    timer = harness._CudaTimer()
    timer(side_stream_kernel(gpu), "data")
    kinds = [entry[0] for entry in gpu.log]
    records = [i for i, k in enumerate(kinds) if k == "record"]
    assert len(records) == 2
    start, end = records
    assert kinds[start - 1] == "synchronize" and start < kinds.index("call")
    returned = kinds.index("return")
    assert "synchronize" in kinds[returned:end], f"the end event is recorded before the device is idle: {kinds}"
    assert kinds[end + 1 :] == ["synchronize"]  # the interval is read only once the end event is reached


def test_current_stream_work_is_timed_as_before(gpu):
    timer = harness._CudaTimer()

    def custom_kernel(data):
        gpu.launch("default", 1000.0)
        return data

    _, event_us = timer(custom_kernel, None)
    assert 1000.0 <= event_us < 1000.0 + 50.0
