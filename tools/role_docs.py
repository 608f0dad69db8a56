#!/usr/bin/env python3
"""Write each role README's variable tables from the role's meta/argument_specs.yml.

    python3 tools/role_docs.py           rewrite the generated section of every roles/*/README.md
    python3 tools/role_docs.py --check   change nothing; exit 1 naming each README that is out of date

meta/argument_specs.yml is the one place a role variable is described: Ansible checks types and
choices against it before the role's first task, `ansible-doc -t role claude_vllm.fleet.<role>`
shows it, and this tool writes the README's table from it between the two marker lines below
(everything outside them is left alone). A default the spec cannot hold (a Jinja expression in
defaults/main.yml) is shown as that expression. Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COMMAND = "python3 tools/role_docs.py"
BEGIN = ("<!-- BEGIN generated from meta/argument_specs.yml by tools/role_docs.py: "
         "edit the spec, then run python3 tools/role_docs.py -->")
END = "<!-- END generated from meta/argument_specs.yml -->"

_MARKUP = [(re.compile(r"[CVO]\(([^()]*)\)"), r"`\1`"), (re.compile(r"I\(([^()]*)\)"), r"*\1*"),
           (re.compile(r"B\(([^()]*)\)"), r"**\1**"), (re.compile(r"U\(([^()]*)\)"), r"\1"),
           (re.compile(r"L\(([^(),]*),\s*([^()]*)\)"), r"[\1](\2)")]


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text()) if path.exists() else None


def role_dirs() -> list[Path]:
    return sorted(p.parent.parent for p in REPO.glob("roles/*/meta/argument_specs.yml"))


def entry_points(role: Path) -> dict:
    return (load_yaml(role / "meta/argument_specs.yml") or {}).get("argument_specs") or {}


def role_defaults(role: Path) -> dict:
    return load_yaml(role / "defaults/main.yml") or {}


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if text.startswith("{{") and text.endswith("}}"):
        return text  # a Jinja expression, computed when the role runs
    try:
        plain = (text != "" and text == text.strip() and yaml.safe_load(text) == text
                 and not re.search(r"[{}\[\],#&*!|>'\"%@`]|: ", text))
    except yaml.YAMLError:
        plain = False
    return text if plain else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_value(value) -> str:
    """A default as compact YAML flow text: strings quoted only where YAML would need it ("580", "")."""
    if isinstance(value, list):
        return "[" + ", ".join(render_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(key)}: {render_value(item)}" for key, item in value.items()) + "}"
    return _scalar(value)


def markdown_text(text) -> str:
    """A spec description (string or list of paragraphs) as one table cell: Ansible markup to Markdown."""
    if isinstance(text, list):
        text = " ".join(str(part) for part in text)
    text = " ".join(str(text or "").split())
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    # Outside code spans, <placeholders> would be read as HTML tags and vanish.
    parts = re.split(r"(`[^`]*`)", text)
    text = "".join(part if part.startswith("`") else part.replace("<", "&lt;").replace(">", "&gt;") for part in parts)
    return cell(text)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def code(text: str) -> str:
    return "`" + cell(text) + "`" if "`" not in text else "``" + cell(text) + "``"


def type_text(option: dict) -> str:
    kind = option.get("type", "str")
    if kind == "list" and option.get("elements"):
        kind = f"list of {option['elements']}"
    if option.get("choices"):
        return kind + ", one of " + ", ".join(code(render_value(choice)) for choice in option["choices"])
    return kind


def default_text(name: str, option: dict, defaults: dict) -> str:
    shared = str(markdown_text(option.get("description"))).startswith("Shared.")
    if option.get("required"):
        return "required" + (" (shared)" if shared else "")
    if "default" in option:
        return code(render_value(option["default"]))
    if name in defaults:
        return code(render_value(defaults[name]))
    return "unset (shared)" if shared else "unset"


def table(options: dict, defaults: dict) -> list[str]:
    lines = ["| Variable | Default | Type | Description |", "| --- | --- | --- | --- |"]
    for name, option in options.items():
        option = option or {}
        lines.append(f"| {code(name)} | {default_text(name, option, defaults)} | {type_text(option)} | "
                     f"{markdown_text(option.get('description'))} |")
    return lines


def generated_section(role: Path) -> str:
    """The text between (and including) the markers for one role."""
    specs = entry_points(role)
    defaults = role_defaults(role)
    main = (specs.get("main") or {}).get("options") or {}
    lines = [BEGIN, "", f"Entry point `main` ({len(main)} variables):", ""]
    lines += table(main, defaults)
    for name, spec in specs.items():
        if name == "main":
            continue
        options = spec.get("options") or {}
        summary = markdown_text(spec.get("short_description", "")).rstrip(".")
        lines += ["", f"Entry point `{name}` (`tasks_from: {name}`): {summary}."]
        if options == main:
            lines[-1] += " It takes the same variables as `main`."
        else:
            lines[-1] += f" Its {len(options)} variables:"
            lines += [""] + table(options, defaults)
    lines += ["", END]
    return "\n".join(lines)


def updated_readme(role: Path) -> tuple[str, str]:
    """(current README text, the text with the generated section rewritten)."""
    path = role / "README.md"
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{path.relative_to(REPO)}: needs exactly one pair of marker lines, in order:\n{BEGIN}\n{END}")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    return text, text[:start] + generated_section(role) + text[stop:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a README is out of date")
    args = parser.parse_args(argv)
    stale = []
    for role in role_dirs():
        current, wanted = updated_readme(role)
        if current == wanted:
            continue
        stale.append(str((role / "README.md").relative_to(REPO)))
        if not args.check:
            (role / "README.md").write_text(wanted)
    if args.check and stale:
        print(f"out of date with meta/argument_specs.yml: {', '.join(stale)}. Fix: run {COMMAND}", file=sys.stderr)
        return 1
    for path in stale:
        print(f"rewrote the variable table of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
