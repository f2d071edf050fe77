"""What a comparison runs: strategies side by side on the same task and seeds (``cobarl compare``), and
the probe's fixed allocation against its placebo (``cobarl probe``).

* ``specs.py`` ``grid.py`` ``key_values.py``: the arms (strategy specs and presets; a tuning sweep's
  Cartesian product; the one reader of their ``key=value`` lists);
* ``runs.py``: what a comparison runs (`CompareOptions`) and what one run gives back (`RunResult`);
* ``backends.py`` ``real.py``: one run on the simulator or as a ``cobarl train`` run (``real`` is here,
  not with the trainer: it is how a comparison calls ``cobarl train``, nothing the trainer needs);
* ``pool.py`` ``compare.py``: worker processes, and `run_compare`, which runs every arm x seed;
* ``run_store.py`` ``train_args.py``: finished runs kept for a continued comparison; ``--train-args``;
* ``cli.py`` ``cli_args.py``: the ``cobarl compare`` command, its driver and its parser (it writes the report
  and runs ``--against`` through `cobarl.experiments.report` and `cobarl.experiments.simulation`, but what
  it drives is the comparison);
* ``probe.py``: ``cobarl probe``, two ``cobarl train`` runs per seed compared the same way (paired,
  over seeds); its split and ratio are also what the simulated probe measures
  (`cobarl.experiments.simulation.sim_probe`).
"""
