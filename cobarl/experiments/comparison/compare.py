"""Run several allocation strategies on one task with the same seeds: ``cobarl compare``.

Every strategy x seed runs on a back-end (`cobarl.experiments.comparison.backends`), in this process or in a
pool of workers (`cobarl.experiments.comparison.pool`). Strategies are specs (`cobarl.experiments.comparison.specs`); a
tuning sweep's arms come from `cobarl.experiments.comparison.grid`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed

from cobarl.experiments.comparison.backends import check_real_runs, real_backend_function, run_one
from cobarl.experiments.comparison.pool import ignore_sigint, stop_pool
from cobarl.signals import Terminated
from cobarl.experiments.comparison.runs import CompareOptions, RunResult


class CompareInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_compare`; ``runs`` holds the runs that had finished, in job order."""

    def __init__(self, runs: list[RunResult], *, terminated: bool = False) -> None:
        super().__init__()
        self.runs, self.terminated = runs, terminated


class RunFailed(RuntimeError):
    """A run stopped with its policy's refusal (e.g. DAPO's cap on generation batches when nearly every
    group has one reward value); names the arm and seed. Finished runs are kept in the store."""

    def __init__(self, label: str, seed: int, err: Exception) -> None:
        super().__init__(f"strategy {label!r}, seed {seed}: {err}")
        self.label, self.seed, self.reason = label, seed, str(err)


def run_compare(options: CompareOptions, *, progress: bool = True, done: Mapping[tuple[str, int], RunResult] | None = None,
                keep: Callable[[RunResult], RunResult] | None = None) -> list[RunResult]:
    """Every strategy x seed, in parallel over ``options.workers`` processes.

    Results come back sorted by (strategy order, seed) whatever the completion order, so the
    output files do not depend on scheduling. Ctrl-C stops the runs at once and raises
    `CompareInterrupted` with the finished ones.

    ``done``: runs finished before (by ``(label, seed)``), taken as they are instead of run again;
    ``keep``: called in this process on every run as it finishes (to store it); what it returns is kept.
    """
    if options.backend == "real":
        real_backend_function()  # fail before starting anything
        check_real_runs(options)
    jobs = [(spec, seed) for spec in options.strategies for seed in options.seeds]
    results: dict[tuple[str, int], RunResult] = {key: run for key, run in (done or {}).items()
                                                 if key in {(s.label, seed) for s, seed in jobs}}
    todo = [(spec, seed) for spec, seed in jobs if (spec.label, seed) not in results]
    bar = _progress(len(todo), progress)
    finish = keep or (lambda run: run)
    workers = max(1, min(options.workers, len(todo)))
    try:
        if workers == 1:
            for spec, seed in todo:
                try:
                    run = run_one(options.backend, spec, seed, options)
                except RuntimeError as err:
                    raise RunFailed(spec.label, seed, err) from err
                results[(spec.label, seed)] = finish(run)
                bar.update(1)
        else:
            _run_parallel(todo, options, workers, results, bar, finish)
    except KeyboardInterrupt as stop:
        raise CompareInterrupted([results[(s.label, seed)] for s, seed in jobs if (s.label, seed) in results],
                                 terminated=isinstance(stop, Terminated)) from None
    finally:
        bar.close()
    return [results[(spec.label, seed)] for spec, seed in jobs]


def _run_parallel(jobs: list, options: CompareOptions, workers: int, results: dict, bar, finish) -> None:
    pool = ProcessPoolExecutor(max_workers=workers, initializer=ignore_sigint)
    try:
        futures = {pool.submit(run_one, options.backend, spec, seed, options): (spec.label, seed) for spec, seed in jobs}
        for fut in as_completed(futures):
            try:
                run = fut.result()
            except RuntimeError as err:
                raise RunFailed(*futures[fut], err) from err
            results[futures[fut]] = finish(run)
            bar.set_postfix_str(f"{futures[fut][0]} seed {futures[fut][1]}")
            bar.update(1)
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown()


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional; run silently without it
        return _NoBar()
    return tqdm(total=total, desc="compare", unit="run", dynamic_ncols=True)
