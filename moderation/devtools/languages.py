"""How well the language rule of a policy works: ``python -m moderation.devtools.languages``.

Measured, with the policy's ``languages:`` section (default: the shipped policy) and the detector the worker
runs (``moderation.pipeline.language``):

* **Non-English posts** — ``language_posts.jsonl`` beside this file, short posts the team wrote (not from
  any data set) in 21 languages and 11 scripts: the share the policy treats as unsupported (what matters:
  such a post is never auto-decided) and the share whose language is named exactly. Set ``dev`` was written
  first and used to choose the thresholds; set ``heldout`` was written after they were fixed; ``romanized``
  is Hindi in Latin script (code-mixed "Hinglish"), reported apart.
* **English posts** — the English test texts of OLID, HatEval, HateCheck and the SMS Spam Collection, read
  from ``--data-dir`` at run time (nothing from them is written anywhere but the terminal): the share the
  policy would wrongly send to review as unsupported, per source. A few of these "English" posts really are
  in another language (HatEval has German, Dutch and French tweets): the figure is an upper bound.
* **Cost** — microseconds per post of the language step as the worker runs it (``assess_languages`` on
  batches of 64), on the English posts (mean, and median / p99 over the batches), and the detector's load
  time and resident memory; ``--model`` adds the shipped model's cost per post (tokenize + infer, batches
  of 64) on the same machine for comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moderation.core.errors import ModerationError
from moderation.pipeline import language
from moderation.pipeline.language import Languages, assess_language, assess_languages
from moderation.pipeline.policy import load_policy
from moderation.pipeline.records import Post

SAMPLE = Path(__file__).with_name("language_posts.jsonl")
ENGLISH_SOURCES = ("olid", "hateval", "hatecheck", "sms")


def language_posts(path: Path = SAMPLE) -> list[dict[str, str]]:
    """The team's multilingual posts: ``lang``, ``script``, ``set`` (dev | heldout | romanized), ``text``."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def english_texts(data_dir: Path) -> dict[str, list[str]]:
    """English posts of the shared data sets, per source (loaded by the training code's readers)."""
    from moderation.training.data import load_corpus

    corpus = load_corpus(data_dir, ENGLISH_SOURCES)
    texts: dict[str, list[str]] = defaultdict(list)
    for (source, _), examples in corpus.parts.items():
        texts[source].extend(e.text for e in examples)
    return dict(texts)


def measure_posts(rule: Languages, posts: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Per set, language and script: posts, flagged as unsupported, named exactly; and the posts missed."""
    out: dict[str, Any] = {}
    for part in sorted({p["set"] for p in posts}):
        rows = [p for p in posts if p["set"] == part]
        by_lang: dict[str, Counter[str]] = defaultdict(Counter)
        by_script: dict[str, Counter[str]] = defaultdict(Counter)
        missed = []
        for p in rows:
            got = assess_language(rule, Post(id="m", text=p["text"]))
            for table, key in ((by_lang, p["lang"]), (by_script, p["script"])):
                table[key]["posts"] += 1
                table[key]["flagged"] += not got.supported
                table[key]["exact"] += got.detected == p["lang"]
            if got.supported:
                missed.append({"lang": p["lang"], "text": p["text"], "detected": got.detected, "p": got.confidence})
        total = Counter[str]()
        for c in by_lang.values():
            total.update(c)
        out[part] = {
            "posts": total["posts"],
            "flagged": total["flagged"],
            "exact": total["exact"],
            "languages": len(by_lang),
            "scripts": len(by_script),
            "by_language": {k: dict(v) for k, v in sorted(by_lang.items())},
            "by_script": {k: dict(v) for k, v in sorted(by_script.items())},
            "missed": missed,
        }
    return out


def measure_english(
    rule: Languages, texts: dict[str, list[str]], batch: int = 64
) -> tuple[dict[str, Any], list[float]]:
    """Per source: posts, flagged as unsupported (the false positives), what they were taken for; and, per
    batch of ``batch`` posts assessed together as the worker does, the seconds per post."""
    out: dict[str, Any] = {}
    seconds: list[float] = []
    clock = time.perf_counter
    for source, items in texts.items():
        flagged: Counter[str] = Counter()
        examples: list[str] = []
        results = []
        for lo in range(0, len(items), batch):
            chunk = [Post(id="e", text=t) for t in items[lo : lo + batch]]
            t0 = clock()
            results += assess_languages(rule, chunk)
            seconds.append((clock() - t0) / len(chunk))
        for text, got in zip(items, results, strict=True):
            if not got.supported:
                flagged[got.effective] += 1
                if len(examples) < 5:
                    examples.append(f"{got.effective} {got.confidence:.2f}: {text[:70]!r}")
        n = sum(flagged.values())
        out[source] = {
            "posts": len(items),
            "flagged": n,
            "rate": round(n / max(1, len(items)), 5),
            "as": dict(flagged.most_common(6)),
            "examples": examples,  # printed, never written to --out
        }
    return out, seconds


def model_cost(texts: Sequence[str], batch: int = 64) -> float:
    """Seconds per post of the shipped model (tokenize + infer) on ``texts``, in batches of ``batch``."""
    from moderation.core.settings import Settings
    from moderation.pipeline.infer import OnnxEngine

    engine = OnnxEngine.from_settings(Settings())
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        engine.score(list(texts[i : i + batch]))
    return (time.perf_counter() - t0) / max(1, len(texts))


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moderation.devtools.languages", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="the shared labelled data")
    parser.add_argument("--policy", type=Path, default=None, help="policy file (default: the shipped policy)")
    parser.add_argument("--model", action="store_true", help="also time the shipped model on 2,000 English posts")
    parser.add_argument("--out", type=Path, help="write the figures as JSON (no post of the data sets in it)")
    args = parser.parse_args(argv)

    from moderation.core.settings import DEFAULT_POLICY_FILE

    policy = load_policy(args.policy or DEFAULT_POLICY_FILE)
    rule = policy.languages
    rss0, t0 = _rss_mib(), time.perf_counter()
    language.load()
    load_s, rss = time.perf_counter() - t0, _rss_mib() - rss0

    posts = measure_posts(rule, language_posts())
    try:
        texts = english_texts(args.data_dir)
    except ModerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    english, seconds = measure_english(rule, texts)
    us = sorted(s * 1e6 for s in seconds)
    cost = {
        "posts": sum(v["posts"] for v in english.values()),
        "batches": len(us),
        "mean_us": round(statistics.fmean(us), 1),
        "p50_us": round(us[len(us) // 2], 1),
        "p99_us": round(us[int(len(us) * 0.99)], 1),
        "load_s": round(load_s, 2),
        "rss_mib": round(rss, 1),
        "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.model:
        sample = [t for items in texts.values() for t in items][::17][:2000]
        cost["model_us"] = round(model_cost(sample) * 1e6, 1)

    print(f"policy {policy.version}: languages {rule.model_dump(mode='json')}")
    for part, r in posts.items():
        print(
            f"\n{part}: {r['posts']} posts, {r['languages']} languages, {r['scripts']} scripts — unsupported "
            f"{r['flagged']}/{r['posts']} ({r['flagged'] / r['posts']:.1%}), language exact "
            f"{r['exact']}/{r['posts']} ({r['exact'] / r['posts']:.1%})"
        )
        print("  " + "  ".join(f"{k} {v['flagged']}/{v['posts']} ({v['exact']})" for k, v in r["by_language"].items()))
        for m in r["missed"]:
            print(f"  missed {m['lang']}: {m['text']!r} -> {m['detected']} {m['p']:.2f}")
    all_n = sum(v["posts"] for v in english.values())
    all_fp = sum(v["flagged"] for v in english.values())
    print(f"\nEnglish posts taken for unsupported: {all_fp}/{all_n} ({all_fp / max(1, all_n):.3%})")
    for source, v in english.items():
        print(f"  {source}: {v['flagged']}/{v['posts']} ({v['rate']:.3%}) as {v['as']}")
        for e in v["examples"]:
            print(f"    {e}")
    print(f"\ncost per post: {cost}")
    if args.out:
        for v in english.values():
            v.pop("examples")
        doc = {"policy": policy.version, "languages": rule.model_dump(mode="json"), "posts": posts}
        doc |= {"english": english, "cost": cost}
        args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
