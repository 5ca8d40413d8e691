#!/usr/bin/env bash
# Proves, without a Docker engine, that the Dockerfile's build stage gets all that cargo needs:
# the entry file of every library, binary, bench and build script in the workspace, and each
# member's Cargo.toml, must lie under a path the build stage COPYs (tests and examples are found
# by cargo only if present, so a build without them still works),
# and .dockerignore must keep target/ out of the context. A path the Dockerfile forgets (a bench
# that Cargo.toml declares, say) fails here as it would fail `docker build`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx 'target/' .dockerignore || { echo "check-docker-context: .dockerignore must leave out target/" >&2; exit 1; }
cargo metadata --no-deps --locked --format-version 1 | python3 -c '
import json, os, sys
root = os.getcwd()
copied = []
stage = 0
for line in open("Dockerfile"):
    words = line.split()
    if not words:
        continue
    if words[0] == "FROM":
        stage += 1
    elif words[0] == "COPY" and stage == 1 and not any(w.startswith("--from=") for w in words):
        copied += [os.path.normpath(w) for w in words[1:-1]]
meta = json.load(sys.stdin)
needed = set()
for package in meta["packages"]:
    needed.add(os.path.relpath(package["manifest_path"], root))
    for target in package["targets"]:
        if set(target["kind"]) & {"test", "example"}:
            continue
        needed.add(os.path.relpath(target["src_path"], root))
def covered(path):
    return any(path == c or path.startswith(c + os.sep) for c in copied)
missing = sorted(p for p in needed if not covered(p))
if missing:
    print("check-docker-context: the Dockerfile build stage does not copy what cargo needs:", file=sys.stderr)
    for p in missing:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print("the Dockerfile copies everything cargo needs (%d manifests and target files)" % len(needed))
'
