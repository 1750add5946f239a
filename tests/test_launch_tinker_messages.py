"""What the tinker backend says when it cannot start or the service fails: no promise it cannot keep."""

import logging

import pytest
from fake_tinker import APIConnectionError, AuthenticationError, RateLimitError
from test_launch_tinker import PROMPTS, fake_api, make

from discover_ttt.launch.tinker import TinkerServiceError


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("TINKER_API_KEY", "not-a-valid-key")


def test_a_refused_key_at_start_is_not_blamed_on_the_service(tmp_path):
    api = fake_api(tmp_path / "service")
    api.failures["ServiceClient"] = [AuthenticationError("malformed API key")]
    with pytest.raises(TinkerServiceError) as err:
        make(tmp_path, api=api)
    text = str(err.value)
    assert "refused the request" in text and "check the key in TINKER_API_KEY" in text
    assert "Nothing was started; run the same command again" in text
    assert "checkpoint" not in text and "once the service answers" not in text


def test_no_network_at_start_says_what_it_waits_for(tmp_path, caplog):
    api = fake_api(tmp_path / "service")
    api.failures["ServiceClient"] = [APIConnectionError("network is unreachable")] * 2
    with caplog.at_level(logging.INFO, logger="discover"), pytest.raises(TinkerServiceError) as err:
        make(tmp_path, api=api, retries=1)
    assert "connecting to the service (the default address) with the key in TINKER_API_KEY" in caplog.text
    assert "2 attempts" in caplog.text
    assert "did not answer (check the network and base_url)" in str(err.value) and "checkpoint" not in str(err.value)


def test_a_failure_after_the_start_points_at_resume(tmp_path):
    b = make(tmp_path, retries=0)
    b.api.failures["SamplingClient.sample"] = [RateLimitError("slow down")]
    with pytest.raises(TinkerServiceError, match=r"may answer later\. Then `discover resume <run directory>`"):
        b.sample(PROMPTS[:1], 2)
