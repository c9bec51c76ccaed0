"""`python -m tests.e2e.registry_server FD DATABASE_URL ARTIFACTS_DIR`: serve create_registry_app on a
listening socket inherited as file descriptor FD.

The test keeps the socket, so it can kill -9 this process and start another on the same address while
clients keep connecting (the kernel queues them until the next process accepts).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import uvicorn

from registry.api import create_registry_app


def main(argv: list[str]) -> None:
    fd, database_url, artifacts_dir = int(argv[1]), argv[2], Path(argv[3])
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(create_registry_app(database_url, artifacts_dir), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv)
