"""The Python snippets of README.md and docs/*.md name only functions and constants that exist."""

import collections
import importlib
import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a markdown text."""
    out, current, lang = [], None, ""
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                out += ["\n".join(current)] if lang == "python" else []
                current = None
        elif current is not None:
            current.append(line)
    return out


def package_modules() -> dict[str, str]:
    """{short name: dotted name} of the wow_jax modules whose short name is unique."""
    found = collections.defaultdict(list)
    for path in (ROOT / "wow_jax").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] != "__init__":
            found[parts[-1]].append(".".join(parts))
    return {short: names[0] for short, names in found.items() if len(names) == 1}


def block_modules(block: str, modules: dict[str, str]) -> dict[str, str]:
    """Names in `block` that stand for a wow_jax / configs module (imported there, or a unique
    wow_jax module name the block does not assign itself)."""
    names = dict(modules)
    for assigned in re.findall(r"^\s*(\w+)\s*=", block, re.M):
        names.pop(assigned, None)
    imports = re.findall(r"from ((?:wow_jax|configs)[\w.]*) import ([\w, ]+)", block)
    for package, imported in imports:
        for name in imported.split(","):
            name = name.strip().split(" as ")[0]
            names[name] = f"{package}.{name}"
    return names


# issue 16: docs name only existing functions (docs/vae.md named importer.import_component).
def test_doc_snippets_name_existing_attributes():
    modules, missing = package_modules(), []
    for doc in DOCS:
        for block in python_blocks(doc.read_text()):
            names = block_modules(block, modules)
            for name, attr in re.findall(r"(?<![\w.])(\w+)\.(\w+)", block):
                module = names.get(name)
                if module is None or importlib.util.find_spec(module) is None:
                    continue  # A variable, or a class imported from a module.
                if not hasattr(importlib.import_module(module), attr):
                    missing.append(f"{doc.name}: {name}.{attr}")
    assert not missing, missing
