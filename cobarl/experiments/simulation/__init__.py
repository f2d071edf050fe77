"""The LLM-free simulator, and how far it is trusted.

* ``simulator.py`` ``sim_model.py`` ``sim_rollouts.py``: the simulator's run loop (and its maths, stated
  once); the simulated task and model and how a step moves it; the common random numbers behind every
  simulated reward;
* ``sim_presets.py``: its presets (``--sim-preset``: the default task, task v4 and its regimes);
* ``sim_probe.py``: the strategy-neutral measurements on it that calibrate a preset (the probe, a uniform
  run), the simulated counterpart of ``cobarl probe``;
* ``sim_vs_real.py`` ``sim_map.py`` ``sim_trust.py``: the simulator checked against real training
  (``cobarl compare --against``: one real comparison, or a regime map cell by cell) and the switch that
  follows from the measured check (whether a report shows simulated accuracy). They read real reports
  and are read by the report, but their subject is the simulator: they live with it.
"""
