"""`reelflow clips`: the evidence clips live streams recorded (`watch --record LABEL`).

    $ reelflow clips list --stream door          # the latest first: state, label, start, length, path
    $ reelflow clips get door-20261130T101500Z-falling-3f2a -o falling.mp4

A client of a running stack: it reads the clips' records in Redis and copies files from
REELFLOW_CLIPS_DIR, which must be reachable here (the same machine, or a shared volume).
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import ReelflowError
from services.cli.options import add_json_option, positive_int

if TYPE_CHECKING:
    from services.store.clips import ClipStore


def add_commands(commands, home) -> None:
    clips = commands.add_parser("clips", parents=[home], help="list the evidence clips live streams recorded, or copy one",
                                description="Clips are recorded by streams watched with --record (or changed with "
                                            "`streams record`): from --pre seconds before a label's enter event to "
                                            "--post after it, remuxed from the camera's own packets. `clips list`: "
                                            "the latest first. `clips get ID [-o FILE]`: copy a ready clip here.")
    clips.add_argument("action", choices=["list", "get"])
    clips.add_argument("id", nargs="?", metavar="ID", help="with get: the clip's id (from `clips list`)")
    clips.add_argument("--stream", metavar="NAME", help="with list: only this stream's clips")
    clips.add_argument("--limit", type=positive_int, default=20, metavar="N", help="with list: at most N (default 20)")
    clips.add_argument("-o", "--output", metavar="FILE", help="with get: where to copy it (default: its own name, here)")
    add_json_option(clips, "with list: one JSON object per clip")
    clips.set_defaults(run=run_clips)


def run_clips(args) -> int:
    from services.settings import settings_for
    from services.store.clips import ClipStore
    from services.store.connection import connect

    settings = settings_for(args.home)
    store = ClipStore(connect(settings).r)
    if args.action == "get":
        return _get(store, args)
    if args.id:
        raise ReelflowError("`clips list` takes no id; `clips get ID` copies one")
    records = store.list(args.stream, args.limit)
    if args.json:
        for record in records:
            print(json.dumps(record))
        return 0
    if not records:
        print("no clips" + (f" of stream {args.stream}" if args.stream else "")
              + "; streams record them when watched with --record LABEL (see `reelflow watch --help`)")
    for r in records:
        when = datetime.datetime.fromtimestamp(r["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{r['id']:<48} {r['state']:<9} {r['label'][:24]:<24} {when}  {r['duration_s']:6.1f} s  {r['path']}"
              + (f"  ({r['reason']})" if r.get("reason") else ""))
    return 0


def _get(store: ClipStore, args) -> int:
    if not args.id:
        raise ReelflowError("which clip? `reelflow clips get ID` (ids: `reelflow clips list`)")
    record = store.get(args.id)
    if record is None:
        raise ReelflowError(f"no clip {args.id!r} (expired, or never recorded); `reelflow clips list` shows them")
    if record["state"] != "ready":
        raise ReelflowError(f"clip {args.id} is {record['state']}" + (f": {record['reason']}" if record.get("reason")
                                                                     else "; try again when it is ready"))
    source = Path(record["path"])
    target = Path(args.output or source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise ReelflowError(f"{target} exists; pass another -o FILE (nothing is overwritten)")
    shutil.copyfile(source, target)
    print(f"{target} ({record['duration_s']:.1f} s, {record['label']}, stream {record['stream']})")
    return 0
