"""The replay backend: completions read from a file, in order. It cannot train.

Use it to re-score a fixed set of programs with the full loop (archive, events,
best/), and to drive the loop deterministically in tests.

``path`` is either a JSONL file (each line a JSON string, or an object with a
``text`` key) or a folder: ``*.py`` files become replies with one python code
block, ``*.txt`` and ``*.md`` files are used as replies verbatim; files are taken
in name order.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from discover_ttt.backend import Backend, Completion
from discover_ttt.errors import UserError


class ReplayError(UserError):
    pass


def _read(f: Path) -> str:
    # bytes that are not UTF-8 arrive as lone surrogates, as a model's reply might
    return f.read_text(encoding="utf-8", errors="surrogateescape")


def load_replies(path: Path) -> list[str]:
    if path.is_dir():
        replies = []
        for f in sorted(path.iterdir()):
            if f.suffix == ".py":
                replies.append(f"```python\n{_read(f)}\n```")
            elif f.suffix in (".txt", ".md"):
                replies.append(_read(f))
        if not replies:
            raise ReplayError(f"replay folder {path} holds no .py, .txt or .md files.")
        return replies
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ReplayError(f"cannot read replay file {path}: {e.strerror or e}.") from None
    replies = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReplayError(f"replay file {path}, line {i}: not JSON ({e.msg}).") from None
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise ReplayError(f"replay file {path}, line {i}: expected a string or an object with a 'text' string.")
        replies.append(text)
    if not replies:
        raise ReplayError(f"replay file {path} holds no replies.")
    return replies


class ReplayBackend(Backend):
    name = "replay"
    can_train = False

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: Path
        # When the replies run out: start again from the first (True) or stop the run (False).
        cycle: bool = True

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.replies = load_replies(params.path)
        self.position = 0

    def _next(self) -> str:
        if self.position >= len(self.replies) and not self.params.cycle:
            raise ReplayError(
                f"the replay file {self.params.path} ran out after {len(self.replies)} replies; "
                "set backend.cycle: true to reuse them, or lower run.steps."
            )
        text = self.replies[self.position % len(self.replies)]
        self.position += 1
        return text

    def sample(self, prompts, n):
        meter = self.sampling_meter(len(prompts) * n)
        out = []
        for _ in prompts:
            group = []
            for _ in range(n):
                group.append(Completion(text=self._next()))
                meter.add(rollouts=1)
            out.append(group)
        return out

    def save(self, directory: Path) -> None:
        (Path(directory) / "replay.json").write_text(json.dumps({"position": self.position}))

    def load(self, directory: Path) -> None:
        self.position = json.loads((Path(directory) / "replay.json").read_text())["position"]
