"""Run any problem plugin inside NeMo RL's GRPO, with PUCT and our estimators.

NeMo RL (``nemo_rl``) samples with vLLM and trains on its own GPU cluster; this package
gives it the three pieces of the method it does not have, without changing its sources:

- :mod:`.environment`: our ``Problem``, sandbox and PUCT archive as a NeMo RL
  environment (a Ray actor): it scores message logs and writes our run directory;
- :mod:`.dataset`: a dataset whose prompts are the states PUCT selects after the
  previous step's rewards;
- :mod:`.advantages`: GRPO's advantage step replaced by the advantages our estimator
  computed for the same rollouts, grouped by PUCT state;
- :mod:`.driver`: the script that wires them into ``grpo.setup``/``grpo_train``;
- :mod:`.export`: ``discover export nemo-rl CONFIG OUTDIR``.

Only :mod:`.driver` imports ``nemo_rl``; everything else imports without it.
"""

#: NeMo RL versions whose interfaces the adapter follows (see docs/backends.md).
SUPPORTED_NEMO_RL = ">=0.3,<0.8"
INSTALL_HINT = (
    "install NeMo RL on the cluster (https://github.com/NVIDIA/NeMo-RL, versions "
    f"{SUPPORTED_NEMO_RL}) and discover-ttt in the same environment"
)
