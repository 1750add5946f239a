"""Run a discover config inside NeMo RL's GRPO (the pattern of NeMo RL's own
``examples/run_grpo_sliding_puzzle.py``: build the environment actor and the dataset,
``grpo.setup``, ``grpo.grpo_train``).

    python -m discover_ttt.launch.nemo_rl.driver --config OUTDIR/nemo_rl.yaml \\
        --discover-config OUTDIR/discover.yaml [hydra-style overrides of the NeMo RL config]

``discover export nemo-rl CONFIG OUTDIR`` writes both files and a ``run.sh`` that calls
this. The only module of ours that imports ``nemo_rl``.
"""

from __future__ import annotations

import argparse
from typing import Any

from discover_ttt.errors import MissingExtra, UserError

from . import INSTALL_HINT
from .advantages import install
from .dataset import PuctDataset
from .environment import TASK_NAME, environment_actor


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="GRPO in NeMo RL with a discover problem, PUCT and our estimator")
    parser.add_argument("--config", required=True, help="the NeMo RL YAML written by `discover export nemo-rl`")
    parser.add_argument(
        "--discover-config",
        default=None,
        help="our resolved run config (default: env.discover.discover_config of the NeMo RL config)",
    )
    parser.add_argument("--run-dir", default=None, help="our run directory (default: run.output of that config)")
    return parser.parse_known_args(argv)


def chat_template_kwargs(discover_config: str) -> dict[str, Any]:
    """What our backend section passes to the chat template (e.g. reasoning_effort: high)."""
    import yaml

    with open(discover_config) as f:
        backend = (yaml.safe_load(f) or {}).get("backend") or {}
    return dict(backend.get("chat_template_kwargs") or {})


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    try:
        from nemo_rl.algorithms import grpo
        from nemo_rl.algorithms.utils import get_tokenizer
        from nemo_rl.distributed.virtual_cluster import init_ray
        from nemo_rl.models.generation import configure_generation_config
        from nemo_rl.utils.config import load_config, parse_hydra_overrides
        from omegaconf import OmegaConf
    except ImportError as e:
        raise MissingExtra("the NeMo RL driver", "NeMo RL (nemo_rl)", None, e, install=INSTALL_HINT) from None

    config = load_config(args.config)
    if overrides:
        config = parse_hydra_overrides(config, overrides)
    config = OmegaConf.to_container(config, resolve=True)

    discover_config = args.discover_config or config.get("env", {}).get(TASK_NAME, {}).get("discover_config")
    if not discover_config:
        raise UserError("no discover config: pass --discover-config or set env.discover.discover_config.")

    init_ray()
    tokenizer = get_tokenizer(config["policy"]["tokenizer"])
    config["policy"]["generation"] = configure_generation_config(config["policy"]["generation"], tokenizer)

    env = environment_actor(discover_config, args.run_dir)
    hook = install(grpo, env)
    print(f"discover: PUCT states and our advantages through {hook}; run config {discover_config}")
    dataset = PuctDataset(
        env,
        tokenizer,
        prompts_per_step=config["grpo"]["num_prompts_per_step"],
        steps=config["grpo"]["max_num_steps"],
        chat_template_kwargs=chat_template_kwargs(discover_config),
    )
    (
        policy,
        policy_generation,
        _cluster,
        dataloader,
        val_dataloader,
        loss_fn,
        logger,
        checkpointer,
        grpo_state,
        master_config,
    ) = grpo.setup(config, tokenizer, dataset, None)
    grpo.grpo_train(
        policy,
        policy_generation,
        dataloader,
        val_dataloader,
        tokenizer,
        loss_fn,
        {TASK_NAME: env},
        None,
        logger,
        checkpointer,
        grpo_state,
        master_config,
    )


if __name__ == "__main__":
    main()
