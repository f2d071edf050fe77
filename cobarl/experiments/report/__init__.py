"""Reports of comparisons: the numbers, the files a report holds, and what is built from several reports.

* ``report_stats.py``: the numbers (means and 95 % intervals over seeds, paired gaps, a sweep's choice);
* ``summary_io.py``: ``summary.json``'s typed, versioned records, the one reader and writer;
* ``figures.py`` ``markdown.py`` ``console.py``: the PNG figures, ``report.md`` and the lines printed;
* ``report.py``: writes a comparison's report from its runs;
* ``regime_map.py`` ``regime_map_report.py``: the regime map (``python -m
  cobarl.experiments.report.regime_map``), built from real comparisons' reports (and ``cobarl diagnose``
  outputs) by the same statistics: a report across reports.
"""
