"""pressured's benchmark suite: prove the speed against baselines measured in the same run.

Run it from the repository root, as root (it makes cgroups and real memory pressure)::

    python3 -m benchmarks                     # full run (< 15 min), regenerates BENCHMARKS.md
    python3 -m benchmarks --smoke             # small sizes, one repetition (CI, about a minute)
    python3 -m benchmarks --only relief,idle  # some sections; results in benchmarks/results

Sections, one module each, in the order an event travels backwards from the user's view:

* :mod:`benchmarks.relief`: SIGKILL -> memory freed (kill only, a bare kill+mrelease floor,
  pressured's ``kill_and_reap``), normal and CPU-starved victims of 1, 4 and 8 GiB;
* :mod:`benchmarks.reaction`: pressure event -> SIGKILL sent with 100 .. 10,000 processes in
  scope, split into scanning, ranking and signalling, beside a bare scan;
* :mod:`benchmarks.episodes`: real page-cache thrash watched by ``pressured run``, onset of
  stall -> kill -> memory back, beside polling loops at 100 ms and 1 s on the same episodes;
* :mod:`benchmarks.idle`: CPU time, wake-ups and RSS of the idle daemon on uvloop and the
  stdlib loop, beside an idle interpreter and a 100 ms polling loop;
* :mod:`benchmarks.startup`: exec -> armed -> first kill and SIGTERM -> exit of a restarted
  daemon, quiet, beside a thrasher and with its files evicted, beside a bare interpreter, and
  the import cost of each dependency.

Timings are never test assertions: ``tests/test_benchmarks_smoke.py`` only checks that the
smoke mode runs and writes well-formed results.
"""
