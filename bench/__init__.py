"""Benchmarks of golem-api and its local Golem network: ``./bench/run`` measures and writes ``docs/performance.md``.

Every figure is a median over several runs with its spread, taken in one run of the command on one machine;
ratios compare against a baseline measured in the same run (a plain spawn on the host, or yapapi 0.13.1 on the
same local node), so that a slower or faster machine moves both sides together.
"""
