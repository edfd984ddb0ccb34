"""One section of bench/RESULTS.md rewritten in place (imported by the bench scripts'
table writers): the file is split at its "## " headings; the section whose heading is
the first line of `text` is replaced where it stands, or inserted after the section
headed `after` (first: right after the file's head; else at the end when there is no
such section), and the others are kept as they are."""
import os
import re

HEAD = "# miras benchmark results\n\n"


def _heading(part):
    return part.split("\n", 1)[0].strip()


def write_section(path, text, after=None, first=False):
    parts = [HEAD]
    if os.path.exists(path):
        with open(path) as f:
            parts = re.split(r"(?m)^(?=## )", f.read())
    title = _heading(text)
    block = text.rstrip("\n") + "\n\n"
    same = [i for i, p in enumerate(parts) if _heading(p) == title]
    if same:
        parts[same[0]] = block
        parts = [p for i, p in enumerate(parts) if i not in same[1:]]
    else:
        index = 1 if first else next(
            (i + 1 for i, p in enumerate(parts) if after and _heading(p) == after), len(parts))
        parts.insert(index, block)
    with open(path, "w") as f:
        f.write("".join(p if p.endswith("\n") else p + "\n" for p in parts).rstrip("\n") + "\n")


def has_section(path, title):
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return any(_heading(p) == title for p in re.split(r"(?m)^(?=## )", f.read()))
