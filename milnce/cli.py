"""The `milnce` command (also `python -m milnce`): `milnce <verb> [args ...]`, one verb per milnce/commands/<verb>.py,
with the same arguments as tools/<verb>.py. `milnce` or `milnce --help` lists the verbs."""
import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import milnce.commands

PROG = "milnce"


def verbs() -> dict:
    """verb → one-line description, from milnce/commands/*.py, read as source (ast) so that nothing is imported."""
    out = {}
    for info in sorted(pkgutil.iter_modules(milnce.commands.__path__), key=lambda m: m.name):
        if info.ispkg or info.name.startswith("_"):
            continue
        path = Path(info.module_finder.path) / f"{info.name}.py"
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except (OSError, SyntaxError):
            doc = ""
        out[info.name] = doc.strip().splitlines()[0].rstrip(" ,:;.") if doc.strip() else ""
    return out


def usage(table: dict) -> str:
    width = max(map(len, table), default=0)
    lines = [f"usage: {PROG} <verb> [args ...]     (also: python -m milnce <verb> ...)", "",
             "Video-text representation learning from narrated video (MIL-NCE / HowTo100M).", "", "verbs:"]
    lines += [f"  {name:<{width}}  {desc}" for name, desc in table.items()]
    lines += ["", f"`{PROG} <verb> --help` shows a verb's arguments; `make-toy-corpus` is accepted for make_toy_corpus."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    table = verbs()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(table))
        return 0
    verb, rest = argv[0].replace("-", "_"), argv[1:]
    if verb not in table:
        print(f"{PROG}: unknown verb '{argv[0]}'; valid verbs: {', '.join(table)}", file=sys.stderr)
        return 2
    # The verb's module is imported here, when it is called, and not at the top of this file: the commands import
    # torch, Lightning, PyAV ... (seconds), and `milnce --help` or a mistyped verb should not pay for all of them.
    module = importlib.import_module(f"milnce.commands.{verb}")
    # argparse names the program after sys.argv[0]: `milnce train`, so that a verb's usage line reads as typed.
    sys.argv = [f"{PROG} {verb}", *rest]
    rc = module.main(rest)
    return rc if isinstance(rc, int) else 0
