#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The layer rule (docs/architecture.md): no source file includes a project
# header from a higher layer. Prints each violation and the usual
# "N passed, N failed" line (one check per file); exits 1 on any violation.
import pathlib, re, sys

# Rank of each header or source, low to high. Inside lib/core the order is
# that of the rooms: settings < store/host < shm_store, redis_store < mailbox < mount,
# direct < namespace/attributes < tree, pid_dir < router < daemon.
CORE = {
    "settings": 10, "timers": 10, "quota": 10, "persist": 10,
    "store": 11, "host": 11, "catalog": 11,
    "shm_store": 12, "redis_store": 12, "redis_scripts": 12, "redis_catalog": 12,
    "mailbox": 13,
    "mount": 14, "direct": 14,
    "namespace": 15, "attributes": 15,
    "tree": 16, "pid_dir": 16,
    "router": 17,
    "daemon": 18,
}
PUBLIC_VOCABULARY = {"protocol.h", "layout.h"}  # lib/include/mailbox: shared by all


def rank(path):
    p = pathlib.PurePosixPath(path)
    parts = p.parts
    if parts[:3] == ("lib", "include", "mailbox") or parts[:1] == ("mailbox",):
        return 0 if p.name in PUBLIC_VOCABULARY else 5  # the client API
    if "base" in parts[:2]:
        return 1
    if "shm" in parts[:2]:
        return 2
    if "redis" in parts[:2]:
        return 3  # the hiredis connection layer: base only
    if "client" in parts[:2]:
        return 5
    if "mq" in parts[:2]:
        return 6  # the mq API and the preload, over the client
    if "core" in parts[:2]:
        stem = p.stem
        if stem not in CORE:
            raise SystemExit(f"check-layers: {path}: not in the layer table (scripts/check-layers.py)")
        return CORE[stem]
    if parts[:1] in (("fusefs",), ("tools",)):
        return 30
    return None


def resolve(inc, src):
    for base in (pathlib.Path("lib"), pathlib.Path("lib/include"), src.parent):
        if (base / inc).exists():
            return (base / inc).as_posix()
    return None


root = pathlib.Path(__file__).resolve().parent.parent
import os
os.chdir(root)
files = sorted(p for d in ("lib", "fusefs", "tools") for p in pathlib.Path(d).rglob("*")
               if p.suffix in (".h", ".hpp", ".cc"))
passed = failed = 0
for f in files:
    mine = rank(f.as_posix())
    bad = []
    for inc in re.findall(r'^#include "([^"]+)"', f.read_text(), re.M):
        target = resolve(inc, f)
        if target is None:
            continue
        theirs = rank(target)
        if mine is None or theirs is None:
            continue
        # A room's own header at the same rank is fine; client and core never meet.
        cross = {"client", "core"} == {pathlib.PurePosixPath(f).parts[1], pathlib.PurePosixPath(target).parts[1]}
        if theirs > mine or cross:
            bad.append(f"{f} includes {target}, a higher layer" if not cross else f"{f} includes {target}: client and core are separate rooms")
    if bad:
        failed += 1
        print("\n".join(bad))
    else:
        passed += 1
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
