"""The simulator's presets (``cobarl compare --sim-preset NAME``): the documented default task, and the
simulator shaped like each regime of the embedded families task.

A families preset is the task's regime (``cobarl.tasks.embedded.REGIMES``: its mistake rates and its
unreachable families, read from there, never restated) with the learner fitted on task v4
(``V4_LEARNER``, ``docs/simulator-v4.md``). The regime is a property of the task, not of the learner,
so the unreachable presets add no fitted constant: they are v4's learner in another world.
"""

from __future__ import annotations

from cobarl.experiments.simulation.sim_model import SimConfig, cluster_skills_from_pass_rates
from cobarl.experiments.simulation.simulator import SimOptions
from cobarl.tasks.embedded import REGIMES
from cobarl.tasks.families import Regime

V4_LEARNER: dict[str, float] = {"skill_offset": -0.2, "difficulty_std": 1.0, "lr": 0.8, "transfer": 0.1}
"""Values printed by ``scripts/calibrate_simulator.py --targets scripts/targets-v4.json``
(docs/simulator-v4.md), fitted on strategy-neutral measurements of task v4 only."""


def families_options(regime: Regime, *, skill_offset: float, difficulty_std: float, lr: float,
                     transfer: float) -> SimOptions:
    """The simulator shaped like the embedded families task in ``regime`` (``cobarl.tasks.families``;
    README "The embedded task"): 24 clusters (the families) of 16 train prompts, 512 held-out prompts,
    16 prompts and 128 rollouts per step, 300 steps. Cluster k starts at ``logit(1 - q_k) +
    skill_offset`` with q_k the warm-start's mistake rate (its pass rate follows 1 - q); the regime's
    beyond-reach and wrong-reference families are unreachable clusters (``SimConfig``). The four
    keyword arguments are what ``scripts/calibrate_simulator.py`` fits to strategy-neutral measurements."""
    rates = regime.warm_start_rates
    skills = cluster_skills_from_pass_rates([1.0 - rates[k] for k in range(len(rates))])
    sim = SimConfig(train_prompts=384, heldout_prompts=512, validation_prompts=512, clusters=len(rates),
                    cluster_skills=tuple(s + skill_offset for s in skills), difficulty_std=difficulty_std,
                    lr=lr, transfer=transfer, beyond_reach=tuple(sorted(regime.beyond_reach)),
                    wrong_reference=tuple(sorted(regime.wrong_reference)))
    return SimOptions(steps=300, prompts_per_step=16, rollouts_per_prompt=8.0, sim=sim)


def families_v4_options(*, skill_offset: float, difficulty_std: float, lr: float, transfer: float) -> SimOptions:
    """:func:`families_options` of task v4 (every family reachable): what the calibration fits."""
    return families_options(REGIMES["families-v4"], skill_offset=skill_offset, difficulty_std=difficulty_std,
                            lr=lr, transfer=transfer)


# The one place presets live. "default" is the documented default task; one preset per regime of the
# embedded task, named as its --task, so a real comparison's task names the preset that mirrors it.
SIM_PRESETS: dict[str, SimOptions] = {
    "default": SimOptions(),
    **{name: families_options(regime, **V4_LEARNER) for name, regime in REGIMES.items()},
}
