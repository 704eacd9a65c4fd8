#!/usr/bin/env python3
"""Fails when an #include runs upward in the layering of docs/ARCHITECTURE.md.

Layers, bottom first: common/; kernels/; sharding/ and cluster/ (neither including the other);
worker/; then coordinator/'s sub-libraries: {tokenizer, chat, sampling} -> engine -> serving ->
{http, native} -> app. A file may include its own component and any component below it. tests/
and bench/ sit on top of everything and are not checked.

Usage: check_layering.py [--root DIR]      check the tree (default: the repository)
       check_layering.py --selftest        prove the check fails on a wrong include
"""
import argparse
import os
import re
import sys
import tempfile

# component -> components it may include (besides itself); transitive closure is applied below.
DIRECT = {
    "common": [],
    "kernels": ["common"],
    "sharding": ["kernels"],
    "cluster": ["kernels"],
    "worker": ["sharding", "cluster"],
    "coordinator/tokenizer": ["worker"],
    "coordinator/chat": ["worker"],
    "coordinator/sampling": ["worker"],
    "coordinator/engine": ["coordinator/sampling"],
    "coordinator/serving": ["coordinator/engine", "coordinator/tokenizer", "coordinator/chat"],
    "coordinator/http": ["coordinator/serving"],
    "coordinator/native": ["coordinator/serving"],
    "coordinator/app": ["coordinator/http", "coordinator/native"],
}
SOURCE_EXT = (".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh", ".inl", ".inc")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def closure():
    allowed = {}
    for comp in DIRECT:
        seen, stack = set(), [comp]
        while stack:
            c = stack.pop()
            for d in DIRECT[c]:
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        allowed[comp] = seen | {comp}
    return allowed


def component_of(path):
    """The component a repository-relative path belongs to, or None outside the checked tree."""
    parts = path.replace(os.sep, "/").split("/")
    if parts[0] == "coordinator":
        return "coordinator/" + parts[1] if len(parts) > 2 else None
    return parts[0] if parts[0] in DIRECT else None


def check(root):
    allowed = closure()
    errors = []
    for comp in DIRECT:
        base = os.path.join(root, comp)
        if not os.path.isdir(base):
            continue
        for dirpath, _, files in os.walk(base):
            for name in sorted(files):
                if not name.endswith(SOURCE_EXT):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = component_of(m.group(1))
                        if target is None or target in allowed[comp]:
                            continue
                        errors.append(f"{rel}:{lineno}: {comp} may not include \"{m.group(1)}\" ({target} is not "
                                      f"below {comp}; see docs/ARCHITECTURE.md)")
    return errors


def selftest():
    with tempfile.TemporaryDirectory() as tmp:
        def write(rel, text):
            p = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        write("kernels/ok.h", '#include "common/error.h"\n')
        write("worker/ok.cpp", '#include "kernels/backend.h"\n#include "cluster/communicator.h"\n')
        assert check(tmp) == [], check(tmp)
        cases = {
            "kernels/bad.h": '#include "worker/phi_model.h"\n',             # upward
            "sharding/bad.cpp": '#include "cluster/step_plan.h"\n',          # sideways
            "coordinator/engine/bad.h": '#include "coordinator/serving/service.h"\n',
        }
        for rel, text in cases.items():
            write(rel, text)
            errs = check(tmp)
            assert len(errs) == 1 and errs[0].startswith(rel), errs
            os.remove(os.path.join(tmp, rel))
    print("check_layering selftest: 3 wrong includes caught, 2 right ones passed")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()
    if args.selftest:
        return selftest()
    errors = check(os.path.abspath(args.root))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check_layering: {len(errors)} include(s) run upward", file=sys.stderr)
        return 1
    print("check_layering: every include runs downward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
