"""The code's shape: imports inside picket_dask run one way (no circle), and no built packages in the tree."""

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "picket_dask"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """picket_dask module -> the picket_dask modules it imports, at the top or inside functions
    (the package's own __init__, which hands names on, left out)."""
    files = {_module(f): f for f in PKG.rglob("*.py")}
    graph = {}
    for mod, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    pkg = ".".join(base + ([node.module] if node.module else []))
                else:
                    pkg = node.module or ""
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in files else pkg for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t not in (mod, "picket_dask"):
                    deps.add(t)
        graph[mod] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    graph = import_graph()
    assert "picket_dask.io.copick_io" in graph["picket_dask.io.tomogram"]  # the reader, used one way
    assert "picket_dask.io.tomogram" not in graph["picket_dask.io.copick_io"]
    assert circles(graph) == []


def test_circle_detection_sees_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_built_packages_committed():
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert not [f for f in files if f.endswith((".whl", ".tar.gz", ".egg", ".conda"))]


def test_readme_command_block_names_every_option():
    """The README's command-line block lists every option of every subcommand (it drifted: --face-layer and the
    copick spacing options were missing while --help had them)."""
    import argparse
    import re

    from picket_dask.cli import build_parser

    text = (ROOT / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    listed = set(re.findall(r"--[A-Za-z][A-Za-z0-9-]*", block))
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = {f"{name} {opt}" for name, p in sub.choices.items() for a in p._actions for opt in a.option_strings
               if opt.startswith("--") and opt != "--help" and opt not in listed}
    assert not missing, sorted(missing)


def test_short_options_for_out_and_workflows():
    """``-o`` is ``--out`` and ``-w`` is ``--workflows`` / ``--workflow`` in every subcommand that has them (the
    letters users type from other tools), and each parses to the same value as the long form."""
    import argparse

    from picket_dask.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for a in p._actions:
            if "--out" in a.option_strings:
                assert "-o" in a.option_strings, name
            if {"--workflows", "--workflow"} & set(a.option_strings):
                assert "-w" in a.option_strings, name
    short = parser.parse_args(["run", "t.mrc", "-o", "out", "-w", "gabor-gmm-cc"])
    long = parser.parse_args(["run", "t.mrc", "--out", "out", "--workflows", "gabor-gmm-cc"])
    assert (short.out, short.workflows) == (long.out, long.workflows) == ("out", "gabor-gmm-cc")
