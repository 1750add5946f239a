"""The ``openai`` backend: sampling from any OpenAI-compatible chat-completions endpoint.

A vLLM or SGLang server, llama.cpp's server, or a hosted model. It cannot train
(``can_train = False``): with it a run is PUCT reuse with best-of-N sampling and no
test-time training. Only text comes back, so completions carry no token ids.

The API key is read from the environment variable named by ``api_key_env`` (never from
the config itself). Requests go out in parallel threads with retries and exponential
back-off on connection errors, timeouts, HTTP 429 and 5xx. Standard library only.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from discover_ttt.backend import Backend, Completion

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        ..., description="Endpoint root, e.g. http://localhost:8000/v1 (…/chat/completions is appended)."
    )
    model: str = Field(..., description="Model name the server knows.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key; None sends no key (local servers)."
    )
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    n_per_request: int = Field(
        1, ge=1, description="Completions asked for in one request (the 'n' field); servers that reject n>1 need 1."
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(600.0, gt=0)
    retries: int = Field(4, ge=0, description="Retries of a failed request (connection errors, 429, 5xx).")
    backoff_s: float = Field(1.0, ge=0, description="First retry wait; doubled each time, with jitter.")
    seed: int | None = Field(
        None, description="Sent as 'seed' (offset per request) when set; not every server honours it."
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra request fields, e.g. {chat_template_kwargs: {enable_thinking: true}}."
    )


class EndpointError(RuntimeError):
    """The endpoint answered with an error we do not retry, or kept failing."""


class OpenAIBackend(Backend):
    """Best-of-N sampling through ``POST {base_url}/chat/completions``."""

    name: ClassVar[str] = "openai"
    can_train: ClassVar[bool] = False
    Params = OpenAIParams

    def __init__(self, params: OpenAIParams) -> None:
        super().__init__(params)
        self.url = params.base_url.rstrip("/") + "/chat/completions"
        self.api_key = None
        if params.api_key_env:
            self.api_key = os.environ.get(params.api_key_env)
            if not self.api_key:
                raise EndpointError(
                    f"backend.api_key_env names the environment variable {params.api_key_env!r}, which is not set; "
                    "export it with your key (keys never go in config files), or remove api_key_env for a server "
                    "that needs none."
                )
        self.requests_sent = 0  # offsets the seed so that every request draws differently

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        p = self.params
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(p.retries + 1):
            if attempt:
                time.sleep(p.backoff_s * 2 ** (attempt - 1) * (1 + 0.25 * random.random()))
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=p.timeout_s) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:500]
                last = f"HTTP {e.code}: {detail}"
                if e.code not in RETRYABLE_STATUS:
                    raise EndpointError(
                        f"{self.url} refused the request ({last}); check base_url, model and the key."
                    ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        raise EndpointError(f"{self.url} failed {p.retries + 1} times; last error: {last}")

    def _request(self, messages: list[dict[str, str]], n: int, seed: int | None, meter=None) -> list[Completion]:
        p = self.params
        body: dict[str, Any] = {
            "model": p.model,
            "messages": messages,
            "n": n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        body.update(p.extra_body)
        reply = self._post(body)
        usage = reply.get("usage") or {}
        if meter is not None:
            meter.add(rollouts=n, tokens=int(usage.get("completion_tokens") or 0))
        choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise EndpointError(f"{self.url} returned {len(choices)} choices for n={n}; set n_per_request: 1.")
        out = []
        for choice in choices:
            message = choice.get("message") or {}
            out.append(
                Completion(text=message.get("content") or "", finish_reason=choice.get("finish_reason") or "stop")
            )
        return out

    def sample(self, prompts: list[list[dict[str, str]]], n: int) -> list[list[Completion]]:
        p = self.params
        jobs = []  # (prompt index, count, seed) in rollout order
        for i, messages in enumerate(prompts):
            left = n
            while left > 0:
                k = min(left, p.n_per_request)
                seed = None if p.seed is None else p.seed + self.requests_sent
                self.requests_sent += 1
                jobs.append((i, messages, k, seed))
                left -= k
        meter = self.sampling_meter(len(prompts) * n)
        with ThreadPoolExecutor(max_workers=p.concurrency) as pool:
            results = list(pool.map(lambda job: self._request(job[1], job[2], job[3], meter), jobs))
        out: list[list[Completion]] = [[] for _ in prompts]
        for (i, _, _, _), completions in zip(jobs, results, strict=True):
            out[i].extend(completions)
        return out

    def save(self, directory) -> None:
        from pathlib import Path

        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "openai.json").write_text(json.dumps({"requests_sent": self.requests_sent}))

    def load(self, directory) -> None:
        from pathlib import Path

        path = Path(directory) / "openai.json"
        if path.exists():
            self.requests_sent = int(json.loads(path.read_text())["requests_sent"])
