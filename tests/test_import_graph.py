"""The house's rules, read from the code itself: every import statement of milnce/, datamodules/ and tools/
(function-level ones included) parsed with ast; no import circle; dependencies run tools → milnce → datamodules."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("milnce", "datamodules")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return {module_name(p): p for p in files}


def imports_of(path: Path, modules):
    """(imported internal module, line, at module top?) for every import statement of one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(map(id, tree.body))
    found = []
    this = module_name(path)
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = this.split(".") if is_pkg else this.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] not in PACKAGES:
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            found.append((target, node.lineno, id(node) in top))
    return found


def graph():
    modules = all_modules()
    return modules, {name: {t for t, _, _ in imports_of(p, modules) if t != name} for name, p in modules.items()}


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_anywhere():
    _, edges = graph()
    assert cycles(edges) == []


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_datamodules_import_nothing_from_milnce():
    modules = all_modules()
    bad = [f"{modules[name].relative_to(ROOT)}:{line} imports {target}"
           for name in modules if name.startswith("datamodules")
           for target, line, _ in imports_of(modules[name], modules) if target.startswith("milnce")]
    assert bad == []


# Internal imports kept inside functions, each for a stated reason (a heavy or optional dependency chain):
DEFERRED = {
    "milnce.cli",                 # a verb's module is imported only when that verb runs (`milnce --help` stays fast)
    "milnce.towers.registry",     # a tower's module (transformers for hf_text: ~2 s) is imported when it is built
    "datamodules.video.decode",   # decord is an optional extra ([decord])
}


def test_internal_imports_sit_at_module_top():
    modules = all_modules()
    inner = [f"{modules[name].relative_to(ROOT)}:{line} imports {target} inside a function"
             for name in modules if name not in DEFERRED
             for target, line, at_top in imports_of(modules[name], modules) if not at_top]
    assert inner == []
