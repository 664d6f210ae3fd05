"""Write lowbit/calib/data/docstrings.txt: sentences from the Python standard library's docstrings.

The technical calibration set of lowbit's cross-domain bench (`python -m benchmarks.xdomain`): text of another
kind than the project's own general-English sentences. Run once and commit the output, so that results do not
depend on the Python version that runs the bench:

    python tools/extract_docstring_sentences.py [--out PATH] [--count N]

Deterministic for a given Python version: a fixed list of modules, public names in sorted order, each docstring
(not inherited) split into paragraphs and sentences, kept when it reads as prose (6 to 40 words, no doctest or
reST markup), duplicates dropped, then `count` spread evenly over what is left.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import platform
import re
import warnings
from pathlib import Path

MODULES = ("argparse", "asyncio", "base64", "bisect", "calendar", "collections", "configparser", "contextlib",
           "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions",
           "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client", "inspect", "io",
           "ipaddress", "itertools", "json", "logging", "mimetypes", "operator", "os", "pathlib", "pickle",
           "platform", "pprint", "queue", "random", "re", "sched", "secrets", "shlex", "shutil", "socket",
           "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit",
           "tokenize", "traceback", "types", "typing", "unittest", "urllib.parse", "uuid", "warnings", "weakref",
           "zipfile", "zlib")
DEFAULT_COUNT = 320
OUT = Path(__file__).resolve().parent.parent / "lowbit" / "calib" / "data" / "docstrings.txt"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_MARKUP = re.compile(r">>>|::|`|\.\.\s|\*\*|={3,}|-{3,}|\|[a-z]|\$|\\")


def docstrings(module_name: str) -> list[str]:
    """The module's own docstring, then each public function's, class's and class method's, names sorted."""
    module = importlib.import_module(module_name)
    found = [module.__doc__]
    with warnings.catch_warnings():  # deprecated module attributes (typing.re) warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in sorted(vars(module)):
            obj = vars(module)[name]
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isbuiltin(obj):
                found.append(obj.__doc__)
            elif inspect.isclass(obj):
                found.append(obj.__doc__)
                found += [vars(obj)[m].__doc__ for m in sorted(vars(obj)) if not m.startswith("_")
                          and callable(vars(obj)[m]) and isinstance(getattr(vars(obj)[m], "__doc__", None), str)]
    return [inspect.cleandoc(d) for d in found if isinstance(d, str)]


def prose_sentences(doc: str) -> list[str]:
    """Sentences of a docstring's prose paragraphs (indented blocks, doctests and field lists skipped)."""
    out = []
    for para in re.split(r"\n\s*\n", doc):
        lines = para.splitlines()
        if not lines or any(ln.startswith((" ", "\t", ">>>", ":", "-", "*")) for ln in lines):
            continue
        text = " ".join(ln.strip() for ln in lines)
        out += [s.strip() for s in _SENTENCE_END.split(text)]
    return [s for s in out if is_prose(s)]


def is_prose(s: str) -> bool:
    """A sentence worth calibrating on: starts with a capital, ends with a full stop, 6-40 words, no markup."""
    words = s.split()
    return (6 <= len(words) <= 40 and s[0].isupper() and s.endswith(".") and not _MARKUP.search(s)
            and s.count("(") == s.count(")") and not s.startswith("#"))


def extract(modules=MODULES, count: int = DEFAULT_COUNT) -> list[str]:
    """`count` distinct prose sentences spread evenly over all modules' docstrings, in module order."""
    pool: list[str] = []
    seen: set[str] = set()
    for name in modules:
        for doc in docstrings(name):
            for s in prose_sentences(doc):
                if s not in seen:
                    seen.add(s)
                    pool.append(s)
    if len(pool) < count:
        raise ValueError(f"only {len(pool)} docstring sentences found in {len(modules)} modules; asked for {count}")
    return [pool[i * len(pool) // count] for i in range(count)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--count", type=int, default=DEFAULT_COUNT)
    args = p.parse_args(argv)
    sentences = extract(count=args.count)
    header = (f"# {len(sentences)} sentences from the docstrings of Python {platform.python_version()}'s standard "
              f"library ({len(MODULES)} modules),\n# written by tools/extract_docstring_sentences.py; technical "
              "calibration text for benchmarks.xdomain. One sentence per line.\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(header + "\n".join(sentences) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {len(sentences)} sentences to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
