"""Entry point of ``python -m langchain_herd.server`` (see :mod:`langchain_herd.server.cli`)."""

from __future__ import annotations

import sys

from langchain_herd.server.cli import serve_main

__all__ = ["serve_main"]

if __name__ == "__main__":
    sys.exit(serve_main())
