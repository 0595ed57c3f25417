"""The results record: the lab's results folders (RESULTS) keep only what a document links, and their
READMEs (and the lab folders' own) link only what exists.

A document is any *.md file of the repository or a notebook in notebooks/. A file under RESULTS is
linked when some document names it by its path from the repository root (bench/results/model/x.log)
or from the document's own folder (x.log in bench/results/model/README.md, ../bench/results/model/x.log
in docs/*.md). A path written after a colon (git show 7bd82db:results/PATH, how a document cites a
file that has left the tree) names that old file, not the one on disk, so it does not count. Each
folder's README.md is itself a document and needs no link. Files that a .gitignore covers
(experiments/results/quality/.gitignore's *.tmp, the root's __pycache__/) and the .gitignore files
themselves are not part of the record.

The reverse: every relative markdown link in a README.md under RESULTS or in LAB_READMES, and every
`backticked` path there ending in .log, .csv, .json, .png, .md, .py or .sh, exists (a backticked path
may be written from the README's folder or from the repository root; code blocks are not checked).
"""
import fnmatch
import json
import os
import posixpath
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = ("experiments/results", "bench/results")  # the record of each lab folder
LAB_READMES = ("experiments/README.md", "bench/README.md")
NEVER = {".git", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
CHECKED_EXT = (".log", ".csv", ".json", ".png", ".md", ".py", ".sh")
# A path: runs of name characters joined by '/', not preceded by a name character, '/' or ':' (so
# that '7bd82db:results/x.log' and the middle of a longer path or URL give nothing), maybe after './'.
PATH = re.compile(r"(?<![\w.\-/:])(?:\./)?([\w.\-]+(?:/[\w.\-]+)*)")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
BACKTICKED = re.compile(r"`([^`\s]+)`")
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)


def _gitignore_rules():
    """(folder, pattern) of every .gitignore at the root or under results/; negations are not used here."""
    rules = []
    for folder in ["."] + [posixpath.relpath(d, ROOT).replace(os.sep, "/")
                           for top in RESULTS for d, _, files in os.walk(os.path.join(ROOT, top)) if ".gitignore" in files]:
        path = os.path.join(ROOT, folder, ".gitignore")
        if os.path.exists(path):
            for line in open(path, encoding="utf-8"):
                line = line.strip()
                if line and not line.startswith(("#", "!")):
                    rules.append((folder, line))
    return rules


RULES = _gitignore_rules()


def ignored(rel, is_dir):
    """Whether a .gitignore covers `rel` (a path from the root; its parent folders are checked by the walk)."""
    for folder, pattern in RULES:
        if folder != ".":
            if not rel.startswith(folder + "/"):
                continue
            sub = rel[len(folder) + 1:]
        else:
            sub = rel
        if pattern.endswith("/") and not is_dir:
            continue
        p = pattern.strip("/")
        if "/" in p:  # anchored at the .gitignore's folder
            if fnmatch.fnmatch(sub, p):
                return True
        elif fnmatch.fnmatch(posixpath.basename(sub), p):
            return True
    return False


def walk(top):
    """Paths from the root of the files under `top` that are not ignored."""
    out = []
    for d, dirs, files in os.walk(os.path.join(ROOT, top)):
        rel_d = os.path.relpath(d, ROOT).replace(os.sep, "/")
        dirs[:] = sorted(x for x in dirs if x not in NEVER and not ignored(posixpath.join(rel_d, x), True))
        out += [posixpath.join(rel_d, f) for f in sorted(files)
                if f != ".gitignore" and not ignored(posixpath.join(rel_d, f), False)]
    return [p[2:] if p.startswith("./") else p for p in out]


def notebook_text(path):
    """A notebook's cell sources and text outputs (not its pictures)."""
    nb = json.load(open(path, encoding="utf-8"))
    parts = []
    for cell in nb.get("cells", []):
        parts.append("".join(cell.get("source", [])))
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", [])))
            for kind, value in out.get("data", {}).items():
                if kind.startswith("text/"):
                    parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def documents():
    """{document path from the root: its text}."""
    docs = {p: open(os.path.join(ROOT, p), encoding="utf-8").read() for p in walk(".") if p.endswith(".md")}
    for p in walk("notebooks"):
        if p.endswith(".ipynb"):
            docs[p] = notebook_text(os.path.join(ROOT, p))
    return docs


def paths_in(text):
    return {m.group(1).rstrip(".") for m in PATH.finditer(text)}


def unlinked(files, docs):
    names = {d: paths_in(text) for d, text in docs.items()}
    missing = []
    for f in files:
        if posixpath.basename(f) == "README.md":
            continue
        if not any(d != f and (f in names[d] or posixpath.relpath(f, posixpath.dirname(d) or ".") in names[d])
                   for d in docs):
            missing.append(f)
    return missing


def dangling(readme, text):
    """The links and backticked paths of one results README that do not exist."""
    folder = posixpath.dirname(readme)
    text = FENCE.sub("", text)
    bad = []
    for target in LINK.findall(text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        target = target.split("#")[0]
        if target and not os.path.exists(os.path.join(ROOT, folder, target)):
            bad.append(target)
    for target in BACKTICKED.findall(text):
        if not target.endswith(CHECKED_EXT) or any(c in target for c in ":*<>"):
            continue
        if not (os.path.exists(os.path.join(ROOT, folder, target)) or os.path.exists(os.path.join(ROOT, target))):
            bad.append(target)
    return bad


def test_every_result_is_linked_from_a_document():
    missing = unlinked([f for top in RESULTS for f in walk(top)], documents())
    assert not missing, ("files under the results folders that no document links (link them from a README or "
                         "docs/*.md, or git rm them and cite them as git show COMMIT:PATH):\n  "
                         + "\n  ".join(missing))


def test_results_readmes_link_only_what_exists():
    bad = {}
    for readme in [f for top in RESULTS for f in walk(top)] + list(LAB_READMES):
        if posixpath.basename(readme) == "README.md":
            text = open(os.path.join(ROOT, readme), encoding="utf-8").read()
            if dangling(readme, text):
                bad[readme] = dangling(readme, text)
    assert not bad, f"links to files that do not exist: {bad}"


def test_the_rules_of_the_check():
    """The matcher itself: root and folder-relative paths count, citations at a commit and longer
    names do not, and ignored files are skipped."""
    docs = {"results/x/README.md": "[a.log](a.log), `sub/b.csv`, git show 7bd82db:results/x/c.log, old_d.log.",
            "docs/k.md": "see ../results/y/e.png and results/y/f.json."}
    files = ["results/x/a.log", "results/x/sub/b.csv", "results/x/c.log", "results/x/d.log",
             "results/y/e.png", "results/y/f.json", "results/x/README.md"]
    assert unlinked(files, docs) == ["results/x/c.log", "results/x/d.log"]
    assert dangling("bench/results/model/README.md", "[x](nope.log) `bench/plot_bench.py` `git show a:b.log`\n"
                    "```\n`nope2.log`\n```\n") == ["nope.log"]
    assert ignored("experiments/results/quality/x.tmp", False) and ignored("results/a/__pycache__", True)
    assert not ignored("experiments/results/quality/README.md", False)
