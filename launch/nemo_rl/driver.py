"""Run a discover config inside NeMo RL's GRPO (the pattern of NeMo RL's own
``examples/run_grpo_sliding_puzzle.py``: build the environment actor and the dataset,
``grpo.setup``, ``grpo.grpo_train``).

    python -m discover_ttt.launch.nemo_rl.driver --config OUTDIR/nemo_rl.yaml \\
        --discover-config OUTDIR/discover.yaml [hydra-style overrides of the NeMo RL config]

``discover export nemo-rl CONFIG OUTDIR`` writes both files and a ``run.sh`` that calls
this. The only module of ours that imports ``nemo_rl``. It follows each supported release
(:mod:`.versions`): ``setup`` returns 10 values up to 0.6 and 13 from 0.7, whose ``setup``
also takes the typed (pydantic) ``MasterConfig`` rather than a dict; the config is loaded by
NeMo RL's own loader with its OmegaConf resolvers registered, as its entry scripts do.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from discover_ttt.errors import MissingExtra, UserError

from . import INSTALL_HINT
from .advantages import install
from .dataset import PuctDataset
from .environment import TASK_NAME, environment_actor
from .versions import parse, refusal

#: what ``grpo.setup`` returns, by how many values it returns: 10 up to 0.6, 13 from 0.7
#: (the NeMo-Gym actor third, teacher workers and their aliases last)
_SETUP_TEN = (
    "policy",
    "policy_generation",
    "cluster",
    "dataloader",
    "val_dataloader",
    "loss_fn",
    "logger",
    "checkpointer",
    "grpo_state",
    "master_config",
)
SETUP_RESULTS: dict[int, tuple[str, ...]] = {
    10: _SETUP_TEN,
    13: (*_SETUP_TEN[:2], "nemo_gym", *_SETUP_TEN[2:], "teacher_worker_groups", "alias_to_group_alias"),
}

#: ``grpo_train``'s positional parameters, as every supported release declares them
TRAIN_ARGS = (
    "policy",
    "policy_generation",
    "dataloader",
    "val_dataloader",
    "tokenizer",
    "loss_fn",
    "task_to_env",
    "val_task_to_env",
    "logger",
    "checkpointer",
    "grpo_state",
    "master_config",
)


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


def register_resolvers() -> None:
    """The OmegaConf resolvers NeMo RL's configs use (``${mul:a,b}`` …), registered as its own
    entry scripts do: ``nemo_rl.utils.config.register_omegaconf_resolvers`` from 0.6, before
    that ``mul`` alone, registered by ``examples/run_grpo_math.py`` itself."""
    from omegaconf import OmegaConf

    try:
        from nemo_rl.utils.config import register_omegaconf_resolvers
    except ImportError:
        if not OmegaConf.has_resolver("mul"):
            OmegaConf.register_new_resolver("mul", lambda a, b: a * b)
        return
    register_omegaconf_resolvers()


def load_master_config(path: str, overrides: list[str]) -> dict[str, Any]:
    """NeMo RL's own loader (``defaults:`` inheritance, Hydra-style overrides), resolved to a plain dict."""
    from nemo_rl.utils.config import load_config, parse_hydra_overrides
    from omegaconf import OmegaConf

    register_resolvers()
    config = load_config(path)
    if overrides:
        config = parse_hydra_overrides(config, overrides)
    return OmegaConf.to_container(config, resolve=True)


def typed(master_config_cls: Any, config: dict[str, Any]) -> Any:
    """The config as ``setup`` takes it: the pydantic ``MasterConfig`` from 0.7, the dict (a TypedDict) before."""
    if hasattr(master_config_cls, "model_validate"):
        return master_config_cls(**config)
    return config


def setup_results(values: tuple) -> dict[str, Any]:
    names = SETUP_RESULTS.get(len(values))
    if names is None:
        raise refusal(
            f"this NeMo RL's grpo.setup returned {len(values)} values; the adapter knows setups that return "
            + " or ".join(str(n) for n in SETUP_RESULTS)
        )
    return dict(zip(names, values, strict=True))


def check_release(version: str) -> None:
    """Refuse a NeMo RL outside the supported range (its ``__version__``)."""
    try:
        parse(version)
    except UserError as e:
        raise refusal(f"the installed NeMo RL is {version}") from e


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    try:
        import nemo_rl
        from nemo_rl.algorithms import grpo
        from nemo_rl.algorithms.utils import get_tokenizer
        from nemo_rl.distributed.virtual_cluster import init_ray
        from nemo_rl.models.generation import configure_generation_config
    except ImportError as e:
        raise MissingExtra("the NeMo RL driver", "NeMo RL (nemo_rl)", None, e, install=INSTALL_HINT) from None
    check_release(getattr(nemo_rl, "__version__", "unknown"))

    config = load_master_config(args.config, overrides)
    discover_config = args.discover_config or config.get("env", {}).get(TASK_NAME, {}).get("discover_config")
    if not discover_config:
        raise UserError("no discover config: pass --discover-config or set env.discover.discover_config.")
    # the export's paths are relative to its folder (run.sh runs there); the Ray actor may start elsewhere
    discover_config = str(Path(discover_config).resolve())
    run_dir = str(Path(args.run_dir).resolve()) if args.run_dir else None

    init_ray()
    tokenizer = get_tokenizer(config["policy"]["tokenizer"])
    config["policy"]["generation"] = configure_generation_config(config["policy"]["generation"], tokenizer)

    env = environment_actor(discover_config, run_dir)
    hook = install(grpo, env)
    print(f"discover: PUCT states and our advantages through {hook}; run config {discover_config}")
    dataset = PuctDataset(
        env,
        tokenizer,
        prompts_per_step=config["grpo"]["num_prompts_per_step"],
        steps=config["grpo"]["max_num_steps"],
        chat_template_kwargs=chat_template_kwargs(discover_config),
    )
    made = setup_results(tuple(grpo.setup(typed(grpo.MasterConfig, config), tokenizer, dataset, None)))
    given = {**made, "tokenizer": tokenizer, "task_to_env": {TASK_NAME: env}, "val_task_to_env": None}
    grpo.grpo_train(*(given[name] for name in TRAIN_ARGS))


if __name__ == "__main__":
    main()
