"""The `milnce` command (python -m milnce): its verbs are tools/*.py, each tool a shim over milnce.commands.<verb>."""
import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py"))


def milnce(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "milnce", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_there_are_tools():
    assert {"train", "evaluate", "search", "make_toy_corpus"} <= set(TOOLS)


@pytest.mark.parametrize("flag", [[], ["--help"]])
def test_help_lists_every_tool_as_a_verb_with_its_description(flag):
    proc = milnce(*flag)
    assert proc.returncode == 0, proc.stderr
    listed = {}
    for line in proc.stdout.splitlines():
        if line.startswith("  ") and line.split():
            name, _, desc = line.strip().partition(" ")
            listed[name] = desc.strip()
    assert set(TOOLS) <= set(listed)
    assert all(listed[name] for name in TOOLS)      # each with its one-line description
    assert listed["train"].startswith("Train (and evaluate) from a config")


def test_train_help_prints_the_train_usage():
    proc = milnce("train", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Train (and evaluate) from a config" in proc.stdout and "trainer.max_steps" in proc.stdout


def test_argparse_verbs_and_dashed_names():
    proc = milnce("make-toy-corpus", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: milnce make_toy_corpus") and "--seed" in proc.stdout


def test_unknown_verb_exits_2_naming_the_valid_verbs():
    proc = milnce("trian", "conf/demo.yaml")
    assert proc.returncode == 2
    assert "unknown verb 'trian'" in proc.stderr and all(name in proc.stderr for name in TOOLS)


def test_help_does_not_import_the_commands():
    code = ("import sys; from milnce.cli import main; main(['--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('milnce.commands.') or m in ('torch', 'av')))")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_no_tool_touches_sys_path():
    offenders = [name for name in TOOLS if "sys.path" in (ROOT / "tools" / f"{name}.py").read_text()]
    assert not offenders


@pytest.mark.parametrize("name", TOOLS)
def test_each_tool_is_a_shim_over_its_command(name):
    tree = ast.parse((ROOT / "tools" / f"{name}.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert f"milnce.commands.{name}" in imported
    assert (ROOT / "milnce" / "commands" / f"{name}.py").is_file()
    assert ast.get_docstring(tree).endswith(f"same as `milnce {name}`.")


@pytest.mark.slow
def test_wheel_holds_the_packages_and_the_entry_point(tmp_path):
    pytest.importorskip("setuptools")       # --no-build-isolation builds with this environment's setuptools
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds
    src = tmp_path / "src"
    for name in ("milnce", "datamodules"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob("milnce-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"milnce/cli.py", "milnce/__main__.py", "milnce/commands/train.py",
                "datamodules/video/decode.py"} <= names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry_points).decode()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(metadata).decode()
    assert "[console_scripts]" in text and "milnce = milnce.cli:main" in text
    assert not any(n.startswith(("tests/", "tools/")) for n in names)
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("Requires-Dist: torch") for r in core)
    assert not any(pkg in r for r in core for pkg in ("pytest", "hypothesis", "selenium"))
