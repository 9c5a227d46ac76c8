"""The bilingual retrieval set: Debian package descriptions in English and Simplified Chinese.

Source: the Debian archive's description indexes for trixie (main): ``Translation-en`` (the
descriptions package maintainers wrote) and ``Translation-zh_CN`` (their translations by the
Debian Description Translation Project's volunteers, matched by Description-md5). Real text
written by people, not by a model. The descriptions are part of Debian's packages and are
distributed under their packages' DFSG-free licences; the translations are published by Debian
alongside them. This script fetches both indexes once from deb.debian.org (a package registry,
reachable from the build machines) and writes bench/data/ddtp-zh-en.jsonl.zst, which is
committed so the evaluation runs offline.

Each package gives a synopsis (one line) and a long description, in both languages. The
evaluation (bench/memory_eval.py) stores long descriptions as memories and asks synopses:
a synopsis judges its own package's long description relevant. Packages whose long
description (in either language) or synopsis repeats another's are dropped, so every
question has exactly one right answer per language.

    python bench/ddtp.py            # rebuild bench/data/ddtp-zh-en.jsonl.zst
"""

from __future__ import annotations

import bz2
import json
import lzma
import random
import sys
import urllib.request
from pathlib import Path

import zstandard

ARCHIVE = "http://deb.debian.org/debian/dists/trixie/main/i18n"
OUT = Path(__file__).parent / "data" / "ddtp-zh-en.jsonl.zst"
DISTRACTORS = 1000  # English-only descriptions of other packages, so English search is not too easy


def _stanzas(text: str) -> list[dict[str, str]]:
    found = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line.startswith(" ") and key:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            found.append(fields)
    return found


def _split(description: str) -> tuple[str, str]:
    """(synopsis, long description) with Debian's " ." paragraph marks as blank lines."""
    synopsis, _, body = description.partition("\n")
    paragraphs = [" ".join(part.split()) for part in body.replace("\n.\n", "\n\n").split("\n\n")]
    return synopsis.strip(), "\n".join(p for p in paragraphs if p and p != ".")


def _fetch(name: str) -> str:
    with urllib.request.urlopen(f"{ARCHIVE}/{name}", timeout=120) as reply:  # noqa: S310 - a fixed http URL on Debian's mirror
        raw = reply.read()
    return (bz2.decompress(raw) if name.endswith(".bz2") else lzma.decompress(raw)).decode("utf-8")


def build() -> list[dict[str, str]]:
    english = {s["Description-md5"]: s for s in _stanzas(_fetch("Translation-en.xz")) if "Description-en" in s}
    chinese = [s for s in _stanzas(_fetch("Translation-zh_CN.bz2")) if "Description-zh_CN" in s]
    rows = []
    for stanza in chinese:
        source = english.get(stanza.get("Description-md5", ""))
        if source is None:
            continue
        zh_synopsis, zh_long = _split(stanza["Description-zh_CN"])
        en_synopsis, en_long = _split(source["Description-en"])
        if min(len(zh_long), len(en_long)) < 40 or not zh_synopsis or not en_synopsis:
            continue
        rows.append({"package": stanza["Package"], "zh_synopsis": zh_synopsis, "zh": zh_long,
                     "en_synopsis": en_synopsis, "en": en_long})
    rows = _unique(rows, ("zh", "en", "zh_synopsis", "en_synopsis"))
    paired = {row["package"] for row in rows}
    others = [s for s in english.values() if s["Package"] not in paired]
    random.Random(27).shuffle(others)
    seen = {row["en"] for row in rows}
    for stanza in others:
        en_synopsis, en_long = _split(stanza["Description-en"])
        if len(en_long) >= 40 and en_long not in seen:
            seen.add(en_long)
            rows.append({"package": stanza["Package"], "en_synopsis": en_synopsis, "en": en_long})
            if len(rows) - len(paired) >= DISTRACTORS:
                break
    return rows


def _unique(rows: list[dict[str, str]], keys: tuple[str, ...]) -> list[dict[str, str]]:
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        for key in keys:
            counts[key, row[key]] = counts.get((key, row[key]), 0) + 1
    return [row for row in rows if all(counts[key, row[key]] == 1 for key in keys)]


def load() -> list[dict[str, str]]:
    data = zstandard.ZstdDecompressor().decompress(OUT.read_bytes(), max_output_size=64 << 20)
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def main() -> None:
    rows = build()
    OUT.parent.mkdir(exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    OUT.write_bytes(zstandard.ZstdCompressor(level=19).compress(text.encode("utf-8")))
    pairs = sum(1 for row in rows if "zh" in row)
    print(f"{OUT}: {pairs} packages in both languages, {len(rows) - pairs} English-only, "
          f"{OUT.stat().st_size:,} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
