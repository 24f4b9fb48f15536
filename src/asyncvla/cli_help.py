"""Short `--help`: tyro renders every field of the config tree (400+ lines for `train`), so `--help`
shows the command's own options and one line per config section, `--help SECTION` that section,
and `--help-all` everything, as tyro renders it."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable

_RULE = re.compile(r"^ -{10,}")
MAX_LINES = 60


def boxes(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(lines before the first section, [(title, the section's lines)]) of tyro's help as it renders
    into a file: each section is a title line (`env options`; the command's own: `options`) over a rule."""
    lines = text.splitlines()
    head: list[str] = []
    out: list[tuple[str, list[str]]] = []
    for k, line in enumerate(lines):
        if k + 1 < len(lines) and _RULE.match(lines[k + 1]) and line.strip().endswith("options"):
            title = line.strip().removesuffix("options").strip()
            out.append((title, [line]))
        elif out:
            out[-1][1].append(line)
        else:
            head.append(line)
    return head, out


def _options_in(box: list[str]) -> int:
    return sum(1 for ln in box if re.match(r"^  --", ln))


def _prog(head: list[str]) -> str:
    """The command as tyro's usage line names it (`asyncvla bench policy`), nested subcommands included."""
    usage = next((ln for ln in head if ln.startswith("usage: ")), "usage: asyncvla")
    return usage.removeprefix("usage: ").split(" [", 1)[0].strip()


def short_help(text: str, section: str | None) -> str:
    """The command's own options and a list of sections; or every box of `section` (and its sub-sections)."""
    head, bs = boxes(text)
    prog = _prog(head)
    if len(text.splitlines()) <= MAX_LINES and section is None:
        return text
    if section is not None:
        picked = [b for t, b in bs if t == section or t.startswith(section + ".")]
        if not picked:
            names = ", ".join(t for t, _ in bs if t and "." not in t)
            return f"{prog}: no section {section!r}; sections: {names}"
        return "\n".join(ln.rstrip() for b in picked for ln in b)
    own = [b for t, b in bs if t == ""]
    sections = [(t, _options_in(b) + sum(_options_in(b2) for t2, b2 in bs if t2.startswith(t + ".")))
                for t, b in bs if t and "." not in t]
    lines = [*head, *(ln.rstrip() for b in own for ln in b), "Config sections (--SECTION.FIELD VALUE overrides a preset):"]
    lines += [f"  {t:<12} {n:>3} options   {prog} --help {t}" for t, n in sections]
    lines += ["", f"Every option: {prog} --help-all"]
    return "\n".join(lines)


def render(parse: Callable[[list[str]], object], argv: list[str]) -> str | None:
    """The short help for `argv` when it asks for help (None otherwise: parse it as usual)."""
    if "--help-all" in argv:
        return None
    flag = next((a for a in ("--help", "-h") if a in argv), None)
    if flag is None:
        return None
    i = argv.index(flag)
    section = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None
    full = io.StringIO()
    with contextlib.redirect_stdout(full), contextlib.suppress(SystemExit):
        parse([a for j, a in enumerate(argv) if j != i + 1 or section is None])
    return short_help(full.getvalue(), section)
