"""The reference design's log_monitor: fail (exit 1) when the site's logs hold errors.

Runs in the sandbox as uid 65534: it sees only what agent.command_readable binds in (by
default nothing, so it reports that and succeeds). The last lines it prints reach the
fallback's input, so they say what was found.
"""

import pathlib
import sys

FOLDERS = [pathlib.Path("/var/log/site")]
WORDS = ("ERROR", "CRITICAL", "Traceback")

found = []
for folder in FOLDERS:
    for log in sorted(folder.glob("*.log")) if folder.is_dir() else []:
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError as exc:
            print(f"{log}: cannot read: {exc.strerror}")
            continue
        found += [f"{log.name}: {line[:200]}" for line in lines[-5000:] if any(w in line for w in WORDS)]
if not any(folder.is_dir() for folder in FOLDERS):
    print("no log folder is readable here (agent.command_readable): nothing checked")
print(f"{len(found)} error lines")
for line in found[-10:]:
    print(line)
sys.exit(1 if found else 0)
