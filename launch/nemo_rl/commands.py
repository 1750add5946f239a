"""``discover export nemo-rl``: registered through the ``register_commands`` hook (launch/plugin.py)."""

from __future__ import annotations

import click

from .versions import NEWEST, RANGE


@click.group("export")
def export() -> None:
    """Turn a discover config into a run of another training system."""


@export.command("nemo-rl")
@click.argument("config", type=click.Path(dir_okay=False, exists=True))
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of CONFIG first.")
@click.option("--defaults", default=None, help="A NeMo RL config to inherit every key we do not set from.")
@click.option("--nodes", default=1, show_default=True, help="SLURM nodes (cluster.num_nodes).")
@click.option("--gpus-per-node", default=8, show_default=True, help="GPUs per node (cluster.gpus_per_node).")
@click.option(
    "--nemo-rl-version",
    "version",
    default=NEWEST,
    show_default=True,
    help=f"The NeMo RL release to write the config for ({RANGE}).",
)
@click.option("--gpu-memory-gb", default=80.0, show_default=True, help="Memory of one GPU, for parallelism.")
@click.option("--model-size", default=None, help="Parameters of the model (e.g. 8B) when its name does not say.")
@click.option("--full-weights", is_flag=True, help="Train every weight instead of the config's LoRA adapter.")
def nemo_rl(
    config: str,
    outdir: str,
    overrides: tuple[str, ...],
    defaults: str | None,
    nodes: int,
    gpus_per_node: int,
    version: str,
    gpu_memory_gb: float,
    model_size: str | None,
    full_weights: bool,
):
    """Write OUTDIR with a NeMo RL GRPO run of CONFIG: any problem, PUCT, our estimator."""
    from .export import export_nemo_rl

    exported = export_nemo_rl(
        config,
        outdir,
        overrides=list(overrides),
        defaults=defaults,
        version=version,
        gpus_per_node=gpus_per_node,
        num_nodes=nodes,
        gpu_gb=gpu_memory_gb,
        model_size=model_size,
        full_weights=full_weights,
    )
    click.echo(
        f"wrote {outdir} for NeMo RL {exported.version}: nemo_rl.yaml, discover.yaml, run.sh, slurm.sbatch, "
        f"choices.txt ({len(exported.choices)} values we chose), untranslated.txt"
    )
    grpo = exported.nemo["grpo"]
    click.echo(
        f"  {grpo['num_prompts_per_step']} prompts x {grpo['num_generations_per_prompt']} generations, "
        f"{grpo['max_num_steps']} steps, model {exported.nemo['policy']['model_name']}"
    )
    if exported.untranslated:
        click.echo("not translated (NeMo RL accepts unknown keys silently, so check these):")
        for line in exported.untranslated:
            click.echo(f"  - {line}")
    click.echo(f"launch: cd {outdir} && sbatch slurm.sbatch   (or bash {outdir}/run.sh on a node with GPUs)")
