"""Benchmark offline language identifiers on SHORT texts.

Why this exists: lensml labels the language of model answers (lensml/langid.py,
default backend lingua). Answers are often a few words long, where identifiers
differ most, so this script measures which offline identifier is most accurate
on short texts in en, zh, ja, ko, ar, bn, sw, to justify the default.

Texts are read at run time by path (nothing is copied into the repo): the
embedded prompts (lensml/data/embedded/part_*.jsonl; a file that does not parse
completely is skipped, since parts may still be being written) plus optional
--extra LANG=PATH JSONL files (field "turns"[0] if present, else "premise").
Each text is cut to several short lengths (characters for zh/ja/ko, words for
the rest) and also kept whole. Every identifier considers all of its languages.

    python benchmarks/langid_accuracy.py \
        --extra zh=../shared/data/mt-bench/zh/question.jsonl \
        --extra sw=../shared/data/xcopa/sw/val.sw.jsonl --json langid.json
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

LANGS = ("en", "zh", "ja", "ko", "ar", "bn", "sw")
CHAR_LANGS = {"zh", "ja", "ko"}  # no spaces between words: cut by characters
CUTS = {"short": (10, 3), "medium": (20, 6), "long": (40, 12)}  # (chars, words)
BUCKETS = (*CUTS, "full")
ROOT = Path(__file__).resolve().parent.parent
# ISO 639-3 members of the zh / ar / sw macrolanguages (py3langid returns e.g. wuu, ary) count as their macrolanguage.
MACRO = {**dict.fromkeys(("cmn", "wuu", "yue", "zho"), "zh"), **dict.fromkeys(("ara", "arb", "ary", "arz", "apc", "acm"), "ar"),
         **dict.fromkeys(("swa", "swh", "swc"), "sw")}


def load_embedded(pattern: str) -> list[tuple[str, str, str]]:
    """(lang, source, text) from every part file that parses completely."""
    out = []
    for path in sorted(glob.glob(pattern)):
        try:
            rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            print(f"skipping {path}: {err}", file=sys.stderr)
            continue
        out += [(lang, Path(path).name, row[lang]) for row in rows for lang in LANGS
                if isinstance(row.get(lang), str) and row[lang].strip()]
    return out


def load_extra(spec: str) -> list[tuple[str, str, str]]:
    lang, _, path = spec.partition("=")
    if not path:
        raise SystemExit(f"--extra wants LANG=PATH, got '{spec}'")
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        turns = row.get("turns")
        text = turns[0] if isinstance(turns, list) and turns else row.get("premise")
        if isinstance(text, str) and text.strip():
            out.append((lang, path, text))
    return out


def samples(texts: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(lang, bucket, text): each text cut to each length, plus whole. A cut that
    does not shorten the text is left out, so short buckets hold truly short texts."""
    out = []
    for lang, _, text in texts:
        text = " ".join(text.split())
        for bucket, (chars, words) in CUTS.items():
            cut = text[:chars] if lang in CHAR_LANGS else " ".join(text.split()[:words])
            if cut != text:
                out.append((lang, bucket, cut))
        out.append((lang, "full", text))
    return out


def make_identifiers(names: list[str]) -> dict:
    """name -> callable(text) -> two-letter code or ''. Unavailable ones are reported and left out."""
    ids = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            if name == "lingua":
                from lingua import LanguageDetectorBuilder
                det = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

                def fn(t, det=det):
                    lang = det.detect_language_of(t)
                    return lang.iso_code_639_1.name.lower() if lang is not None else ""
            elif name == "py3langid":
                import py3langid
                py3langid.classify("warm up")  # loads the model

                def fn(t, m=py3langid):
                    return m.classify(t)[0]
            elif name == "cld3":
                try:  # the old "cld3" bindings
                    import cld3

                    def fn(t, m=cld3):
                        p = m.get_language(t)
                        return p.language if p is not None else ""
                except ImportError:  # cld3-py installs the module "gcld3"
                    import gcld3
                    det = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

                    def fn(t, det=det):
                        return det.FindLanguage(text=t).language
            else:
                raise SystemExit(f"unknown identifier '{name}'")
        except ImportError as err:
            print(f"{name}: not available ({err})", file=sys.stderr)
            continue
        ids[name] = (fn, time.perf_counter() - t0)
    return ids


def norm(code: str) -> str:
    """zh-Hans / zh-CN / zh-Latn / wuu -> zh; 'und' -> ''."""
    code = (code or "").lower().replace("_", "-").split("-")[0]
    return "" if code in ("und", "un", "unknown", "zxx") else MACRO.get(code, code)


def evaluate(fn, data) -> dict:
    hits, total, wrong = defaultdict(int), defaultdict(int), defaultdict(Counter)
    elapsed = 0.0
    for lang, bucket, text in data:
        t0 = time.perf_counter()
        pred = norm(fn(text))
        elapsed += time.perf_counter() - t0
        for key in ((lang, bucket), (lang, "all"), ("all", bucket), ("all", "all")):
            total[key] += 1
            hits[key] += pred == lang
        if pred != lang:
            wrong[lang][pred or "?"] += 1
    acc = {f"{lang}/{b}": {"acc": hits[(lang, b)] / total[(lang, b)], "n": total[(lang, b)]} for lang, b in total}
    return {"accuracy": acc, "ms_per_text": 1000 * elapsed / len(data),
            "top_errors": {lang: dict(c.most_common(3)) for lang, c in wrong.items()}}


def markdown(results: dict, langs: list[str]) -> str:
    def cell(r, key):
        a = r["accuracy"].get(key)
        return f"{100 * a['acc']:.0f}" if a else "-"
    lines = ["| identifier | lang | " + " | ".join(BUCKETS) + " | all |", "|---" * (len(BUCKETS) + 3) + "|"]
    for name, r in results.items():
        for lang in [*langs, "all"]:
            lines.append(f"| {name} | {lang} | " + " | ".join(cell(r, f"{lang}/{b}") for b in (*BUCKETS, "all")) + " |")
    lines += ["", "| identifier | overall % | ms/text | load s |", "|---|---|---|---|"]
    for name, r in sorted(results.items(), key=lambda kv: -kv[1]["accuracy"]["all/all"]["acc"]):
        lines.append(f"| {name} | {100 * r['accuracy']['all/all']['acc']:.1f} | {r['ms_per_text']:.3f} | {r['load_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embedded", default=str(ROOT / "lensml/data/embedded/part_*.jsonl"),
                    help="glob of embedded prompt files (default: %(default)s)")
    ap.add_argument("--extra", action="append", default=[], metavar="LANG=PATH",
                    help="extra JSONL texts in LANG (field turns[0], else premise); repeatable")
    ap.add_argument("--identifiers", default="lingua,py3langid,cld3", help="comma-separated (default: %(default)s)")
    ap.add_argument("--json", metavar="FILE", help="write full results here")
    args = ap.parse_args(argv)

    texts = load_embedded(args.embedded)
    for spec in args.extra:
        texts += load_extra(spec)
    if not texts:
        raise SystemExit("no texts found")
    data = samples(texts)
    langs = [lang for lang in LANGS if any(t[0] == lang for t in texts)]
    langs += sorted({t[0] for t in texts} - set(langs))
    print(f"{len(texts)} texts -> {len(data)} samples; per language: {dict(Counter(t[0] for t in texts))}")

    results = {}
    for name, (fn, load_s) in make_identifiers(args.identifiers.split(",")).items():
        results[name] = {**evaluate(fn, data), "load_s": load_s}
    if not results:
        raise SystemExit("no identifier available")
    print(markdown(results, langs))
    for name, r in results.items():
        print(f"{name} top errors (true: {{predicted: count}}): {r['top_errors']}")
    if args.json:
        meta = {"texts": len(texts), "samples": len(data), "sources": dict(Counter(t[1] for t in texts)),
                "buckets": {b: f"{c} chars (zh/ja/ko) / {w} words" for b, (c, w) in CUTS.items()}}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
