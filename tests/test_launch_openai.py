"""The OpenAI-compatible backend against a small chat-completions server on localhost."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from discover_ttt.launch.openai import EndpointError, OpenAIBackend, OpenAIParams


class FakeServer:
    """Answers each request with n choices whose text names the prompt and a counter;
    the first ``fail_first`` requests get HTTP ``fail_status``."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail_first, self.fail_status = fail_first, fail_status
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    k = len(server.requests)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if k <= server.fail_first:
                    return self._send(server.fail_status, {"error": "busy"})
                prompt = body["messages"][-1]["content"]
                choices = [
                    {
                        "index": j,
                        "message": {"role": "assistant", "content": f"{prompt}|{j}"},
                        "finish_reason": "length" if j == 1 else "stop",
                    }
                    for j in reversed(range(body["n"]))  # out of order on purpose: the backend sorts by index
                ]
                self._send(200, {"id": "x", "object": "chat.completion", "choices": choices})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat(text):
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def test_samples_n_completions_per_prompt_in_order():
    with FakeServer() as srv:
        b = OpenAIBackend(OpenAIParams(base_url=srv.url, model="m", n_per_request=2, max_tokens=77, temperature=0.7))
        out = b.sample([chat("a"), chat("b")], 3)
    assert OpenAIBackend.can_train is False and OpenAIBackend.name == "openai"
    assert [[c.text for c in g] for g in out] == [["a|0", "a|1", "a|0"], ["b|0", "b|1", "b|0"]]
    assert out[0][1].finish_reason == "length" and out[0][0].finish_reason == "stop"
    assert out[0][0].tokens == [] and out[0][0].logprobs == []
    assert sorted(r["n"] for r in srv.requests) == [1, 1, 2, 2]  # 3 = 2 + 1 per prompt
    r = srv.requests[0]
    assert (r["model"], r["max_tokens"], r["temperature"], r["top_p"]) == ("m", 77, 0.7, 1.0)
    assert r["messages"][0] == {"role": "system", "content": "be brief"}
    assert all("Authorization" not in h for h in srv.headers)


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("FAKE_ENDPOINT_KEY", "sk-test-123")
    with FakeServer() as srv:
        b = OpenAIBackend(OpenAIParams(base_url=srv.url, model="m", api_key_env="FAKE_ENDPOINT_KEY"))
        b.sample([chat("x")], 1)
    assert srv.headers[0]["Authorization"] == "Bearer sk-test-123"


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY_VAR", raising=False)
    with pytest.raises(EndpointError, match="NOT_SET_KEY_VAR"):
        OpenAIBackend(OpenAIParams(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="NOT_SET_KEY_VAR"))


def test_retries_busy_server_then_succeeds():
    with FakeServer(fail_first=2, fail_status=503) as srv:
        b = OpenAIBackend(OpenAIParams(base_url=srv.url, model="m", retries=3, backoff_s=0.01))
        out = b.sample([chat("p")], 1)
    assert out[0][0].text == "p|0"
    assert len(srv.requests) == 3


def test_gives_up_after_retries_and_does_not_retry_client_errors():
    with FakeServer(fail_first=10, fail_status=503) as srv:
        b = OpenAIBackend(OpenAIParams(base_url=srv.url, model="m", retries=1, backoff_s=0.01))
        with pytest.raises(EndpointError, match="failed 2 times.*HTTP 503"):
            b.sample([chat("p")], 1)
    with FakeServer(fail_first=10, fail_status=400) as srv:
        b = OpenAIBackend(OpenAIParams(base_url=srv.url, model="m", retries=3, backoff_s=0.01))
        with pytest.raises(EndpointError, match="HTTP 400"):
            b.sample([chat("p")], 1)
        assert len(srv.requests) == 1


def test_seed_and_extra_body_are_sent_and_seed_advances_across_resume(tmp_path):
    with FakeServer() as srv:
        b = OpenAIBackend(
            OpenAIParams(base_url=srv.url, model="m", seed=100, extra_body={"chat_template_kwargs": {"x": 1}})
        )
        b.sample([chat("p")], 2)
        b.save(tmp_path)
        c = OpenAIBackend(OpenAIParams(base_url=srv.url, model="m", seed=100))
        c.load(tmp_path)
        c.sample([chat("q")], 1)
    assert sorted(r["seed"] for r in srv.requests) == [100, 101, 102]
    assert srv.requests[0]["chat_template_kwargs"] == {"x": 1}


def test_params_forbid_unknown_keys_such_as_a_literal_api_key():
    with pytest.raises(Exception, match="api_key"):
        OpenAIParams(base_url="http://x/v1", model="m", api_key="sk-should-not-be-here")


def test_unreachable_endpoint_fails_with_the_url():
    b = OpenAIBackend(OpenAIParams(base_url="http://127.0.0.1:9/v1", model="m", retries=0, timeout_s=2))
    with pytest.raises(EndpointError, match="127.0.0.1:9"):
        b.sample([chat("p")], 1)


def test_sampling_progress_reaches_every_rollout_through_the_callback():
    seen = []
    with FakeServer() as srv:
        b = OpenAIBackend(OpenAIParams(base_url=srv.url, model="m", n_per_request=2, concurrency=2))
        b.set_progress(seen.append)
        b.sample([chat("a"), chat("b")], 3)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 6
    assert [p.done for p in seen] == sorted(p.done for p in seen) and len(seen) == 1 + 4  # start + one per request
