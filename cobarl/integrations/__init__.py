"""Optional framework integrations, each behind its own extra and a guarded import.

* :mod:`cobarl.integrations.verl_plan` and :mod:`~cobarl.integrations.verl_state`: the
  framework-independent half of the verl plugin (where each policy runs, per-prompt ``__rollout_n__``
  plans, the shared state with each step's accounting, checkpoint files); need only numpy.
* :mod:`cobarl.integrations.verl`: verl >= 0.9 V1-trainer classes (agent-loop manager, replay
  buffer, checkpoint callback), with :mod:`~cobarl.integrations.verl_config` (start-up checks),
  :mod:`~cobarl.integrations.verl_rounds` (Reinforce-Ada and PODS inside the agent-loop workers, the
  ``cobarl_pool_baseline`` estimator) and :mod:`~cobarl.integrations.verl_stream` (GRESO's step in the
  trainer process); ``pip install 'cobarl[verl]'``.
"""

from importlib.util import find_spec


def available(name: str) -> bool:
    """Whether the integration ``name`` (``"verl"``) can be imported here, without importing it."""
    if name == "verl":
        return find_spec("verl") is not None and find_spec("transfer_queue") is not None
    raise ValueError(f"unknown integration {name!r}; valid: verl")


__all__ = ["available"]
