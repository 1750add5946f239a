"""A missing optional part (vLLM, Tinker, Ray, a tracker, NeMo RL) is one ``MissingExtra``: one paragraph
naming the extra and its install command, printed by the CLI without a traceback."""

from __future__ import annotations

import re
import sys

import pytest
import yaml
from conftest import TOY

from discover_ttt.errors import MissingExtra, UserError
from discover_ttt.install import install_command

BACKENDS = {"vllm": ("the 'vllm' backend", "vLLM"), "tinker": ("the 'tinker' backend", "the Tinker SDK")}


def test_the_message_names_the_extra_and_its_command():
    e = MissingExtra("the 'vllm' backend", "vLLM", "vllm", ImportError("No module named 'vllm'"), instead="use 'local'")
    assert isinstance(e, UserError) and isinstance(e, ImportError) and e.extra == "vllm"
    assert str(e) == (
        "the 'vllm' backend needs vLLM, which does not import here (No module named 'vllm'). "
        f"Install the 'vllm' extra: {install_command('vllm')}; or use 'local'."
    )
    # a package no extra of ours installs gets its own instruction
    text = str(MissingExtra("the NeMo RL driver", "NeMo RL", None, install="install NeMo RL on the cluster"))
    assert text.endswith("which does not import here. Install NeMo RL on the cluster.")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_missing_backend_package_is_one_paragraph_through_the_cli(tmp_path, monkeypatch, discover_cli, backend):
    monkeypatch.setitem(sys.modules, backend, None)  # import vllm / import tinker now fails
    config = yaml.safe_load((TOY / "config.yaml").read_text())
    config["backend"] = {"name": backend}
    config["run"]["output"] = str(tmp_path / "run")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    p = discover_cli("run", path)
    what, needs = BACKENDS[backend]
    assert p.returncode != 0 and "Traceback" not in p.stderr
    [paragraph] = [line for line in p.stderr.splitlines() if "does not import here" in line]
    assert re.search(
        rf"{re.escape(what)} needs {re.escape(needs)}, which does not import here \(.*\)\. "
        rf"Install the '{backend}' extra: {re.escape(install_command(backend))}; or use backend ",
        paragraph,
    )


def test_a_missing_tracker_and_a_missing_ray_are_the_same_error(tmp_path, monkeypatch):
    from discover_ttt.sandbox.executors import make_sandbox
    from discover_ttt.trackers import Trackers

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MissingExtra, match=re.escape(f"Install the 'mlflow' extra: {install_command('mlflow')}")):
        Trackers.open(["mlflow"], tmp_path, {})
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "discover_ttt.sandbox.ray_executor", raising=False)
    with pytest.raises(MissingExtra, match=re.escape(f"Install the 'ray' extra: {install_command('ray')}")):
        make_sandbox({"executor": "ray"})


def test_the_nemo_rl_driver_without_nemo_rl_says_how_to_install_it(monkeypatch):
    from discover_ttt.launch.nemo_rl import INSTALL_HINT
    from discover_ttt.launch.nemo_rl.driver import main

    monkeypatch.setitem(sys.modules, "nemo_rl", None)
    with pytest.raises(MissingExtra, match=re.escape(INSTALL_HINT[1:])):
        main(["--config", "nemo_rl.yaml"])
