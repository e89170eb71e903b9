"""The `reelflow` command line (`services.cli:main`): parsing and printing only. Each command's
module (`classify`, `stack`: up and process, `jobs`, `streams`, `view`: report and annotate, `train`)
calls the layers below; `options` defines the shared options once, `output` the files it writes.
"""

from services.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
