"""The ``nemo_rl`` backend: what ``discover.yaml`` of an export names, because NeMo RL samples and trains."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from discover_ttt.backend import Backend
from discover_ttt.errors import UserError


class NemoRLBackend(Backend):
    """The backend of a run whose sampling and training happen in NeMo RL (``discover export nemo-rl``).

    It holds nothing, so checkpoints store only our loop, sampler and RNG state; the
    policy's own checkpoints are NeMo RL's. ``discover run`` of such a config refuses: the
    run starts with the export's ``run.sh``.
    """

    name = "nemo_rl"
    can_train = False

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str | None = None  # the policy NeMo RL trains (nemo_rl.yaml's policy.model_name)
        chat_template_kwargs: dict[str, Any] = {}  # applied by the PUCT dataset when it renders prompts

    def sample(self, prompts, n):
        raise UserError(
            "this run samples and trains in NeMo RL: start it with run.sh (or slurm.sbatch) in the folder "
            "`discover export nemo-rl` wrote, not with `discover run`."
        )
