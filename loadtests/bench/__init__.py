"""wrk benchmark harness: the framework ceiling, the textbook server and the gateway, interleaved on
127.0.0.1 with the server pinned to one CPU and wrk to another. Run `python -m loadtests.bench --help`.

Kept free of imports: the servers under test import this package from their own virtual environments.
"""
