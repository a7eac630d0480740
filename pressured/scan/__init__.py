"""The decision path's scan: what is read for every process, what only for finalists, and
where the one lock-taking read (``/proc/PID/cmdline``) happens.

- :mod:`pressured.scan.plan`: what the policies rank on (:class:`RankKey`), so the scan
  knows how little it may read and still hand every policy its true top candidates.
- :mod:`pressured.scan.twophase`: skim one lock-free number per process, then full records
  for the finalists only, largest bound first.
- :mod:`pressured.scan.cmdline`: command lines on a disposable thread, per-read time limit,
  cached per process identity.
- :mod:`pressured.scan.skim`: the skim itself, native when the optional extension is built.
- :mod:`pressured.scan.kept`: skim files kept open between events (the open paid once).
- :mod:`pressured.scan.stages`: per-stage timestamps of one decision, for the kill record.
"""
