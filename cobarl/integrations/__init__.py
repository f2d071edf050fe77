"""Optional framework integrations, each behind its own extra and a guarded import.

* :mod:`cobarl.integrations.verl_plan`: the framework-independent half of the verl plugin
  (per-prompt ``__rollout_n__`` plans, shared allocator state, checkpoint files); needs only numpy.
* :mod:`cobarl.integrations.verl`: verl >= 0.9 V1-trainer classes (agent-loop manager, replay
  buffer, checkpoint callback; advantages stay verl's ``grpo``); ``pip install 'cobarl[verl]'``.
"""

from importlib.util import find_spec


def available(name: str) -> bool:
    """Whether the integration ``name`` (``"verl"``) can be imported here, without importing it."""
    if name == "verl":
        return find_spec("verl") is not None and find_spec("transfer_queue") is not None
    raise ValueError(f"unknown integration {name!r}; valid: verl")


__all__ = ["available"]
