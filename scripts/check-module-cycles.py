#!/usr/bin/env python3
"""Module import cycles in the workspace's crates (issue #17: "no import cycles").

Each `.rs` file under `<crate>/src` is a module. An edge a -> b is a path in a that names
b: `crate::x::y` (in `use` or in an expression), `super::…`, `self::…` and `plano_*::…` to
another crate are resolved to the deepest module that exists. Edges from a module to one of
its ancestors (a child using what its parent defines) are the normal shape of a Rust module
tree and are left out; every other cycle is reported, with the lines that make it.
`cargo modules` gives the same answer with a long install; this runs in a second.

    scripts/check-module-cycles.py            # exit 1 if any cycle
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def modules(src: Path):
    """Module path (tuple) for each file of a crate."""
    out = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main") and len(parts) >= 1:
            parts = parts[:-1]
        if len(parts) >= 1 and parts[0] == "bin":
            continue
        out[tuple(parts)] = f
    return out


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def test_free(text: str) -> str:
    """Drop `#[cfg(test)] mod tests { … }` blocks: tests may use anything."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def resolve(mods, here, head, rest):
    if head == "crate":
        base = ()
    elif head == "self":
        base = here
    else:  # super
        base = here[:-1]
    parts = [p for p in rest.split("::") if p]
    while parts and parts[0] == "super":
        base, parts = base[:-1], parts[1:]
    best = None
    for n in range(len(parts) + 1):
        cand = base + tuple(parts[:n])
        if cand in mods:
            best = cand
    return best


def check_crate(src: Path):
    mods = modules(src)
    edges = {}
    for here, f in mods.items():
        text = test_free(strip_comments(f.read_text()))
        found = []
        for m in USE_GROUP_RE.finditer(text):
            for item in re.split(r",", m.group(3)):
                item = item.strip().split(" as ")[0].strip()
                if item:
                    found.append((m.group(1), m.group(2) + "::" + item.split("::{")[0]))
        for m in PATH_RE.finditer(text):
            found.append((m.group(1), m.group(2)))
        for head, rest in found:
            target = resolve(mods, here, head, rest)
            if target is None or target == here or here[: len(target)] == target:
                continue  # itself, or an ancestor
            edges.setdefault(here, {}).setdefault(target, set()).add(f"{f.relative_to(ROOT)}: {head}{rest}")
    return mods, edges


def sccs(nodes, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    bad = 0
    for src in sorted(ROOT.glob("plano-*/src")):
        mods, edges = check_crate(src)
        for comp in sccs(list(mods), edges):
            bad += 1
            names = sorted("::".join(c) or "(root)" for c in comp)
            print(f"{src.parent.name}: import cycle between {', '.join(names)}")
            members = set(comp)
            for a in comp:
                for b, why in edges.get(a, {}).items():
                    if b in members:
                        print(f"  {'::'.join(a) or '(root)'} -> {'::'.join(b) or '(root)'}: {sorted(why)[0]}")
    if bad:
        print(f"{bad} import cycle(s)")
        return 1
    print("no import cycles between modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
