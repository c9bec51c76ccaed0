"""Load tests and the benchmark harness (loadtests/bench); not part of the installed gateway."""
