#!/usr/bin/env python3
"""Module import cycles in the workspace's crates (issue #17: "no import cycles").

Each `.rs` file under `<crate>/src` is a module (`lib.rs` is the crate root; a `main.rs`
next to a `lib.rs` is a separate binary that reaches the library by its crate name, so it
is left out). An edge a -> b means a names an item that b defines. Paths are resolved the
way rustc resolves them:

- `crate::…`, `self::…`, `super::…` (repeated), a child module's name (`client::X` in
  `routing/mod.rs`), and a name the module imported (`use crate::routing; routing::x::f()`);
- through imports, to where an item is defined: `use super::Api` in a sibling of `plan`,
  when the parent `providers/mod.rs` has `pub use self::plan::Api` (or a private `use`,
  which its children see too, or a glob `pub use x::*`), is an edge to `plan`, not to
  `providers`;
- in `use` trees of any shape (`use crate::{a::{b, c as d}, e::*};`, `pub use`,
  `pub(crate) use`), in expressions and types, and in `#[serde(with = "crate::…")]` strings.

An edge to the module itself or to one of its ancestors, for an item the ancestor defines
itself (a child using what its parent defines), is the normal shape of a Rust module tree and
is left out; every other cycle is reported, with the lines that make it. Test modules
(`#[cfg(test)] mod tests { … }`) are left out: tests may use anything. Paths to other crates
are not edges (Cargo already forbids cycles between crates).

    scripts/check-module-cycles.py            # exit 1 if any cycle
    scripts/check-module-cycles.py --edges    # also print every edge, to check the reading
    scripts/check-module-cycles.py --self-test  # the reading checked on small crates
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# A path whose first segment is not itself preceded by `::` or part of a longer word.
PATH_RE = re.compile(rf"(?<![A-Za-z0-9_:])(?<!::)({IDENT}(?:\s*::\s*{IDENT})+)")
USE_RE = re.compile(r"(?<![A-Za-z0-9_])use\s+([^;]*);", re.S)
DEF_RE = r"(?:struct|enum|fn|trait|type|const|static|union|mod|macro_rules!)\s+{}\b"
KEYWORD_HEADS = {"crate", "self", "super"}


def modules(src: Path):
    """Module path (tuple) for each file of a crate."""
    out = {}
    has_lib = (src / "lib.rs").exists()
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[0] == "bin" or (has_lib and parts == ["main"]):
            continue
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        out[tuple(parts)] = f
    return out


def strip_comments(text: str) -> str:
    """Remove `//` and `/* */` comments, keeping string literals (and `//` inside them)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"[A-Za-z0-9_]", text[i - 1:i] or " "):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(text[i:end])
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif c == "'":
            m = re.match(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", text[i:i + 12])
            if m:  # a char literal (a lifetime has no closing quote)
                out.append(text[i:i + m.end()])
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


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


def split_top(s: str):
    """Split a use-tree list on commas that are not inside braces."""
    parts, depth, cur = [], 0, []
    for c in s:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def use_tree(prefix, tree):
    """Flatten a use tree into (segments, bound name or '*')."""
    tree = re.sub(r"\s+", " ", tree).strip()
    if tree.startswith("::"):
        tree = tree[2:]
    m = re.match(r"^(.*?)\{(.*)\}$", tree, re.S)
    if m:
        head = [p.strip() for p in m.group(1).split("::") if p.strip()]
        out = []
        for sub in split_top(m.group(2)):
            out += use_tree(prefix + head, sub)
        return out
    alias = None
    if " as " in tree:
        tree, alias = [x.strip() for x in tree.split(" as ", 1)]
    segs = prefix + [p.strip() for p in tree.split("::") if p.strip()]
    if not segs:
        return []
    if segs[-1] == "*":
        return [(segs[:-1], "*")]
    if segs[-1] == "self":
        segs = segs[:-1]
        if not segs:
            return []
    return [(segs, alias or segs[-1])]


class Crate:
    def __init__(self, src: Path):
        self.src = src
        self.mods = modules(src)
        self.text = {m: test_free(strip_comments(f.read_text())) for m, f in self.mods.items()}
        self.imports = {}  # module -> name -> segments (as written)
        self.globs = {}  # module -> [segments]
        self.uses = {}  # module -> [segments as written]
        for m, text in self.text.items():
            names, globs, uses = {}, [], []
            for u in USE_RE.finditer(text):
                for segs, bound in use_tree([], u.group(1)):
                    uses.append((segs, bound))
                    if bound == "*":
                        globs.append(segs)
                    elif bound != "_":
                        names[bound] = segs
            self.imports[m], self.globs[m], self.uses[m] = names, globs, uses

    def defines(self, module, name):
        return re.search(DEF_RE.format(re.escape(name)), self.text.get(module, "")) is not None

    def start(self, here, segs, depth):
        """Where a path's first segment puts us: (module, remaining segments) or None."""
        head, rest = segs[0], segs[1:]
        if head == "crate":
            base = ()
        elif head == "self":
            base = here
        elif head == "super":
            base = here[:-1]
        elif here + (head,) in self.mods:
            return here + (head,), rest
        elif head in self.imports.get(here, {}) and depth < 16:
            got = self.resolve(here, self.imports[here][head] + rest, depth + 1)
            return (got, []) if got else None
        else:
            return None  # another crate, std, or a local item
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
        return base, rest

    def resolve(self, here, segs, depth=0):
        """The module that defines what `segs`, written in `here`, names (None: not ours)."""
        if not segs or depth > 16:
            return None
        got = self.start(here, segs, depth)
        if got is None:
            return None
        module, rest = got
        while rest:
            name, rest = rest[0], rest[1:]
            if module + (name,) in self.mods:
                module = module + (name,)
                continue
            # `name` is an item of `module`: defined there, or imported into it.
            if not self.defines(module, name):
                imported = self.imports.get(module, {}).get(name)
                if imported is not None:
                    target = self.resolve(module, imported, depth + 1)
                    return target if target is not None else module
                for glob in self.globs.get(module, []):
                    g = self.resolve(module, glob, depth + 1)
                    if g is not None and g != module and (
                        self.defines(g, name) or name in self.imports.get(g, {})
                    ):
                        return self.resolve(module, glob + [name], depth + 1)
            return module
        return module

    def is_module(self, here, segs):
        """Whether `segs` names a module file itself (not an item in one)."""
        got = self.start(here, segs, 0)
        if got is None:
            return False
        module, rest = got
        for part in rest:
            module = module + (part,)
            if module not in self.mods:
                return False
        return True

    def edges(self):
        edges = {}
        for here, text in self.text.items():
            # Importing a module by name is not using it: the paths through the name are.
            found = [segs for segs, bound in self.uses[here] if bound == "*" or not self.is_module(here, segs)]
            for m in PATH_RE.finditer(USE_RE.sub(";", text)):
                segs = [p.strip() for p in m.group(1).split("::")]
                head = segs[0]
                if head in KEYWORD_HEADS or here + (head,) in self.mods or head in self.imports[here]:
                    found.append(segs)
            for segs in found:
                target = self.resolve(here, segs)
                if target is None or here[: len(target)] == target:
                    continue  # not ours, itself, or what an ancestor defines
                rel = self.mods[here].relative_to(self.src.parent.parent)
                edges.setdefault(here, {}).setdefault(target, set()).add(f"{rel}: {'::'.join(segs)}")
        return edges


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


def name(m):
    return "::".join(m) or "(root)"


# Small crates and the edges the check must find (or must not invent) in them.
SELF_TEST = [
    # A child module named without `self::`, and a parent's `pub use` followed to the
    # sibling that defines the item: a -> a::b (child), a::c -> a::b (through a's re-export).
    ({"lib.rs": "mod a;",
      "a/mod.rs": "mod b; mod c;\npub use self::b::Api;\nfn f() { b::g(); }",
      "a/b.rs": "pub enum Api {}\npub fn g() {}",
      "a/c.rs": "use super::Api;"},
     {("a", "a::b"), ("a::c", "a::b")}),
    # `super::super::`, `crate::x::y` to the deepest module, nested use trees with `as`.
    ({"lib.rs": "mod x; mod y;",
      "x/mod.rs": "pub mod deep;",
      "x/deep.rs": "use super::super::y::Thing;\npub struct D;",
      "y.rs": "use crate::{x::{deep::D as E}};\npub struct Thing;"},
     {("x::deep", "y"), ("y", "x::deep")}),
    # A module imported by name, then used as a path head (`use crate::p; p::q::f()`), a
    # glob re-export, a path in a serde string, and `//` inside a string not hiding the rest.
    # Importing the module `p` itself is no edge to `p`: only what is used through it.
    ({"lib.rs": "mod p; mod r; mod s; mod t;\npub use t::*;",
      "p/mod.rs": "pub mod q;",
      "p/q.rs": "pub fn f() {}",
      "r.rs": "use crate::p;\nfn h() { let u = \"http://x\"; p::q::f(); }",
      "s.rs": "#[serde(with = \"crate::r::ser\")] struct S; fn k() -> crate::T { todo!() }",
      "t.rs": "pub struct T;"},
     {("(root)", "t"), ("r", "p::q"), ("s", "r"), ("s", "t")}),
    # A child using what its parent defines is no edge; what its parent only imports is.
    ({"lib.rs": "mod m; mod n;",
      "m/mod.rs": "mod k;\nuse crate::n::N;\npub struct M;",
      "m/k.rs": "use super::M;\nuse super::N;",
      "n.rs": "pub struct N;\n#[cfg(test)]\nmod tests { use crate::m::M; }"},
     {("m", "n"), ("m::k", "n")}),
]


def self_test():
    import tempfile
    failed = 0
    for i, (files, want) in enumerate(SELF_TEST):
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "crate" / "src"
            for rel, text in files.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_text(text)
            edges = Crate(src).edges()
            got = {(name(a), name(b)) for a in edges for b in edges[a]}
            if got != want:
                failed += 1
                print(f"self-test {i}: edges {sorted(got)}, expected {sorted(want)}")
    print("self-test: " + ("failed" if failed else f"{len(SELF_TEST)} cases pass"))
    return 1 if failed else 0


def main():
    if "--self-test" in sys.argv[1:]:
        return self_test()
    show_edges = "--edges" in sys.argv[1:]
    bad = 0
    for src in sorted(ROOT.glob("plano-*/src")):
        crate = Crate(src)
        edges = crate.edges()
        if show_edges:
            for a in sorted(edges):
                for b in sorted(edges[a]):
                    print(f"{src.parent.name}: {name(a)} -> {name(b)}")
        for comp in sccs(sorted(crate.mods), edges):
            bad += 1
            print(f"{src.parent.name}: import cycle between {', '.join(sorted(name(c) for c in comp))}")
            members = set(comp)
            for a in comp:
                for b, why in edges.get(a, {}).items():
                    if b in members:
                        print(f"  {name(a)} -> {name(b)}: {sorted(why)[0]}")
    if bad:
        print(f"{bad} import cycle(s)")
        return 1
    print("no import cycles between modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
