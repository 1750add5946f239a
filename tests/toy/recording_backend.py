"""The local backend, recording what it is asked to train on, and able to die on cue
(a stand-in for kill -9 in the middle of a step) so that tests can resume it."""

from __future__ import annotations

from discover_ttt.launch.local import LocalBackend


class SimulatedKill(BaseException):
    """Not an Exception, so no guard in the loop mistakes it for a plugin's failure."""


class RecordingBackend(LocalBackend):
    name = "recording_local"
    #: every train() batch of every instance, as [(text, advantage), ...]
    batches: list[list[tuple[str, float]]] = []
    #: die when this sample() call (counted per instance, across resumes) starts
    die_at_sample_call: int | None = None

    def sample(self, prompts, n):
        if self.die_at_sample_call is not None and self.sample_calls == self.die_at_sample_call:
            raise SimulatedKill(f"killed at sample call {self.sample_calls}")
        return super().sample(prompts, n)

    def train(self, batch):
        RecordingBackend.batches.append([(item.completion.text, item.advantage) for item in batch])
        return super().train(batch)
