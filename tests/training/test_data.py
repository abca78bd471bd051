"""Data splits are pure functions of source and text, and synthetic spam never reaches a test set."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation.training import data as D
from moderation.training.synthetic_spam import generate


@given(st.text(min_size=1, max_size=80))
def test_split_depends_only_on_source_and_normalised_text(text: str) -> None:
    first = D.hash_split("sms", text, 0.1, 0.2)
    assert D.hash_split("sms", text, 0.1, 0.2) == first
    assert D.hash_split("sms", f"  {text.upper()}  ", 0.1, 0.2) == D.hash_split("sms", text.upper(), 0.1, 0.2)


def test_split_fractions_are_roughly_as_asked() -> None:
    splits = Counter(D.hash_split("x", f"post number {i}", 0.1, 0.2) for i in range(20_000))
    assert abs(splits["test"] / 20_000 - 0.2) < 0.02
    assert abs(splits["val"] / 20_000 - 0.1) < 0.02


def test_synthetic_spam_is_deterministic_and_never_test() -> None:
    assert generate(seed=13) == generate(seed=13)
    parts: dict = {}
    D.load_synthetic_spam(parts)
    assert {split for (_, split) in parts} <= {"train", "val"}
    labels = Counter(e.target[0] for exs in parts.values() for e in exs)
    assert labels[1] > labels[0] > 0  # spam-heavy, with some hard ham


def test_missing_data_dir_says_what_to_pass(tmp_path) -> None:
    from moderation.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--data-dir"):
        D.load_corpus(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------
# v2 sources: loaders on tiny fixtures, cross-source dedupe, exclude=, hatemoji pairs
# --------------------------------------------------------------------------------------------------


REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NEW_SOURCES = ("edos", "hatexplain", "hatemoji", "toxigen", "scamspot", "janitr")


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


EDOS_HEADER = "text,label_sexist,label_category,label_vector,split,target,suggest_toxic,suggest_hate,suggest_targeted"
HATEMOJI_HEADER = "entry_id,text,type,target,round.base,round.set,set,split,label_gold,matched_text,matched_id"


def write_fixtures(root: Path) -> None:
    write_csv(
        root / "edos-sexism" / "normalized.csv",
        EDOS_HEADER.split(","),
        [
            [
                "Women should not be allowed to vote [URL]",
                "sexist",
                "2. derogation",
                "2.1 x",
                "train",
                "women",
                "1",
                "1",
                "1",
            ],
            ["she is such a [slur] lol", "sexist", "3. animosity", D.EDOS_CASUAL_SLURS, "dev", "women", "1", "0", "1"],
            ["[USER] what the hell is this garbage", "not sexist", "none", "none", "test", "", "0", "0", "0"],
        ],
    )
    write_csv(
        root / "hatexplain" / "normalized.csv",
        ["text", "label", "split_in_source", "suggest_toxic", "suggest_hate", "suggest_targeted"],
        [
            ["<user> those people are vermin", "hatespeech", "train", "1", "1", ""],
            ["<user> you are a moron", "offensive", "train", "1", "0", ""],
            ["<user> nice weather today", "normal", "test", "0", "0", ""],
            # The EDOS test post again, as HateXplain tokenises it: must never be trained on.
            ["<user> what the hell is this garbage", "offensive", "train", "1", "0", ""],
        ],
    )
    raw = root / "hatemoji-build" / "raw"
    write_csv(
        raw / "train.csv",
        HATEMOJI_HEADER.split(","),
        [
            [
                "0",
                "I would love to 🔪 some 👳🏾",
                "threateninglanguage",
                "['mus']",
                "5",
                "5a",
                "original",
                "train",
                "1",
                "x",
                "1",
            ],
            ["3", "🧒🏿=/🐵", "none", "['none']", "5", "5a", "perturbation", "train", "0", "x", "2"],
        ],
    )
    write_csv(
        raw / "validation.csv",
        HATEMOJI_HEADER.split(","),
        [
            [
                "1",
                "I would love to 👏🏽 some 👳🏾",
                "none",
                "['none']",
                "5",
                "5a",
                "perturbation",
                "dev",
                "0",
                "x",
                "0",
            ],
        ],
    )
    write_csv(
        raw / "test.csv",
        HATEMOJI_HEADER.split(","),
        [
            ["2", "🧒🏿=🐵", "dehumanizinglanguage", "['bla']", "5", "5a", "original", "test", "1", "x", "3"],
        ],
    )
    write_csv(
        root / "toxigen-prompts" / "normalized.csv",
        ["text", "label", "target_group", "suggest_toxic", "suggest_hate", "suggest_targeted"],
        [
            ["they should all go back to where they came from", "hate", "immigrant", "1", "1", "1"],
            ["my neighbour is from mexico and makes great food", "neutral", "mexican", "0", "0", "0"],
        ],
    )
    write_csv(
        root / "scamspot-instagram" / "normalized.csv",
        ["text", "scam", "suggest_spam"],
        [
            ["dm me to learn how i made $68 000", "1", "1"],
            ["dm me to learn how i made $68 000", "1", "1"],
            ["yup!", "0", "0"],
            ["contact her on whatsapp", "1", "1"],
            ["contact her on whatsapp", "0", "0"],  # conflicting labels: dropped
        ],
    )
    write_csv(
        root / "janitr-x-spam" / "normalized.csv",
        ["text", "labels", "platform", "is_mock", "suggest_spam", "suggest_bucket"],
        [
            ["FREE airdrop, claim now t.co/x", "scam", "x", "0", "1", "spam"],
            ["ETH looks strong this week", "topic_crypto", "x", "0", "0", "topic_crypto"],
            ["hand-written mock post", "clean", "x", "1", "0", "clean"],
        ],
    )


def by_text(corpus: D.Corpus) -> dict[str, tuple[str, D.Example]]:
    return {e.text: (split, e) for (_, split), exs in corpus.parts.items() for e in exs}


def test_new_loaders_map_labels_as_documented(tmp_path: Path) -> None:
    write_fixtures(tmp_path)
    corpus = D.load_corpus(tmp_path, NEW_SOURCES)
    rows = by_text(corpus)

    split, e = rows["Women should not be allowed to vote [URL]"]
    assert (split, e.target, e.mask) == ("train", (1, 1, 1), (1, 1, 1))
    split, e = rows["she is such a [slur] lol"]  # casual slur: sexist, toxic, not hate
    assert (split, e.target, e.mask) == ("val", (1, 0, 1), (1, 1, 1))
    split, e = rows["[USER] what the hell is this garbage"]  # not sexist: toxic unannotated
    assert (split, e.target, e.mask) == ("test", (0, 0, 0), (0, 1, 1))

    _, e = rows["<user> those people are vermin"]
    assert (e.target, e.mask) == ((1, 1, 0), (1, 1, 0))
    _, e = rows["<user> you are a moron"]
    assert (e.target, e.mask) == ((1, 0, 0), (1, 1, 0))
    assert {rows[t][0] for t in rows if t.startswith("<user>")} <= set(D.SPLITS)
    assert all(
        rows[t][0] == D.hash_split("hatexplain", t, 0.1, 0.2)
        for t in ("<user> those people are vermin", "<user> you are a moron", "<user> nice weather today")
    )

    _, e = rows["they should all go back to where they came from"]
    assert (e.target, e.mask, e.group) == ((1, 1, 1), (1, 1, 1), "immigrant")
    _, e = rows["my neighbour is from mexico and makes great food"]
    assert (e.target, e.mask) == ((0, 0, 0), (1, 1, 1))

    scam = [e for (src, _), exs in corpus.parts.items() if src == "scamspot" for e in exs]
    assert sorted((e.text, e.target[0]) for e in scam) == [("dm me to learn how i made $68 000", 1), ("yup!", 0)]

    janitr = {e.text: e for (src, _), exs in corpus.parts.items() if src == "janitr" for e in exs}
    assert set(janitr) == {"FREE airdrop, claim now t.co/x", "ETH looks strong this week"}
    assert janitr["FREE airdrop, claim now t.co/x"].target == (1,)
    assert janitr["ETH looks strong this week"].target == (0,)
    assert janitr["ETH looks strong this week"].group == "topic_crypto"
    assert all(D.SOURCES[s].license and D.SOURCES[s].split_rule for s in NEW_SOURCES)
    assert set(NEW_SOURCES) <= set(D.LOADERS) and set(NEW_SOURCES) <= set(D.TRAIN_CAPS) <= set(D.VAL_CAPS)


def test_hatemoji_pairs_follow_their_original_and_keep_emoji(tmp_path: Path) -> None:
    write_fixtures(tmp_path)
    rows = by_text(D.load_corpus(tmp_path, ["hatemoji"]))
    # Officially the perturbation of entry 0 is in dev and that of entry 2 in train: both follow the original.
    assert rows["I would love to 🔪 some 👳🏾"][0] == rows["I would love to 👏🏽 some 👳🏾"][0] == "train"
    assert rows["🧒🏿=🐵"][0] == rows["🧒🏿=/🐵"][0] == "test"
    assert rows["🧒🏿=🐵"][1].target == (1, 1, 1) and rows["🧒🏿=/🐵"][1].target == (0, 0, 0)
    # The minimal pairs stay distinct under the de-duplication key.
    assert D.dedupe_key("🧒🏿=🐵") != D.dedupe_key("🧒🏿=/🐵")
    assert D.dedupe_key("I would love to 🔪 some 👳🏾") != D.dedupe_key("I would love to 👏🏽 some 👳🏾")


def test_cross_source_test_text_is_never_trained_on(tmp_path: Path) -> None:
    write_fixtures(tmp_path)
    corpus = D.load_corpus(tmp_path, NEW_SOURCES)
    test_keys = {D.dedupe_key(e.text) for (_, sp), exs in corpus.parts.items() if sp == "test" for e in exs}
    trained = [e for (_, sp), exs in corpus.parts.items() if sp != "test" for e in exs]
    assert not test_keys & {D.dedupe_key(e.text) for e in trained}
    # The HateXplain copy of the EDOS test post is gone unless it hashed into HateXplain's own test split.
    copy = "<user> what the hell is this garbage"
    if D.hash_split("hatexplain", copy, 0.1, 0.2) != "test":
        assert copy not in by_text(corpus)
        assert corpus.dedupe_report["hatexplain"]["test_leak"] == 1
    assert corpus.dedupe_report.get("scamspot", {}).get("duplicate", 0) == 0  # the loader already de-duplicated


def test_dedupe_key_matches_the_same_post_across_sources() -> None:
    same = (
        "@USER You are ALL idiots!! URL",
        "<user> you are all idiots",
        "[USER] You are all idiots… [URL]",
        "RT @someone: you are all idiots http://t.co/abc",
    )
    assert len({D.dedupe_key(t) for t in same}) == 1
    assert D.dedupe_key("i don ’ t care") == D.dedupe_key("I don't care!")
    assert D.dedupe_key("❤️") == D.dedupe_key("❤") != D.dedupe_key("💩")
    assert D.dedupe_key("!!!") == "!!!"  # nothing left: falls back to normalize_key
    assert D.dedupe_key("call 09061701461 now") == D.dedupe_key("Call 09061701939 now")  # templated spam


def ex(
    text: str, source: str, task: D.Task = "toxicity", target: tuple[int, ...] = (1, 0, 0), group: str = ""
) -> D.Example:
    mask = (1, 0, 0) if task == "toxicity" else (1,)
    return D.Example(text, task, target if task == "toxicity" else target[:1], mask, source, group)


def test_dedupe_parts_keeps_one_copy_per_task_and_reports() -> None:
    parts: dict[tuple[str, D.Split], list[D.Example]] = {
        ("olid", "train"): [ex("@USER shared tweet", "olid"), ex("olid only", "olid")],
        ("hatexplain", "train"): [ex("<user> shared tweet", "hatexplain", target=(0, 0, 0))],
        ("hatexplain", "val"): [ex("a test text!", "hatexplain")],
        ("edos", "test"): [ex("A test text", "edos")],
        ("synthetic_spam", "train"): [
            ex("A TEST TEXT", "synthetic_spam", "spam"),
            ex("olid only", "synthetic_spam", "spam"),
        ],
    }
    report = D.dedupe_parts(parts, ["olid", "edos", "hatexplain", "synthetic_spam"])
    assert [e.text for e in parts[("olid", "train")]] == ["@USER shared tweet", "olid only"]
    assert parts[("hatexplain", "train")] == [] and parts[("hatexplain", "val")] == []
    assert [e.text for e in parts[("synthetic_spam", "train")]] == ["olid only"]  # other task: kept
    assert len(parts[("edos", "test")]) == 1  # test splits are never touched
    assert report == {
        "hatexplain": {"test_leak": 1, "duplicate": 1, "conflict": 1},
        "synthetic_spam": {"test_leak": 1, "duplicate": 0, "conflict": 0},
    }


def tag(i: int) -> str:
    """Distinct in letters: ``dedupe_key`` maps every digit run to 0, so ``post 1`` and ``post 2`` are one text."""
    return chr(97 + i // 26) + chr(97 + i % 26)


def small_corpus() -> D.Corpus:
    parts: dict[tuple[str, D.Split], list[D.Example]] = {
        ("olid", "train"): [ex(f"olid {tag(i)}", "olid") for i in range(20)],
        ("edos", "train"): [ex(f"edos {tag(i)}", "edos", group="not sexist" if i % 2 else "sexist") for i in range(20)],
        ("hatemoji", "train"): [
            ex(f"pair {tag(i // 2)} member {tag(i % 2)}", "hatemoji", group=f"pair{i // 2}:none") for i in range(40)
        ],
        ("scamspot", "train"): [ex(f"scam {tag(i)}", "scamspot", "spam", (i % 2,)) for i in range(20)],
    }
    return D.Corpus(parts, Path("."))


def test_training_mix_exclude_drops_a_source_entirely() -> None:
    corpus = small_corpus()
    full = D.training_mix(corpus, "train")
    assert {e.source for e in full} == {"olid", "edos", "hatemoji", "scamspot"}
    donors = [e for e in full if e.group == "ham_donor"]
    assert donors and {e.source for e in donors} <= {"olid", "edos"}
    edos_groups = {e.text: e.group for e in corpus.get("edos", "train")}
    assert {edos_groups[e.text] for e in donors if e.source == "edos"} == {"not sexist"}
    without = D.training_mix(corpus, "train", exclude=["edos", "scamspot"])
    assert {e.source for e in without} == {"olid", "hatemoji"}
    with pytest.raises(ValueError, match="unknown"):
        D.training_mix(corpus, "train", exclude=["nope"])


def test_training_mix_has_each_text_once_per_task_and_keeps_pairs_whole() -> None:
    mix = D.training_mix(small_corpus(), "train", scale=0.004)  # caps of 8 (hatemoji) and below
    keys = [(e.task, D.dedupe_key(e.text)) for e in mix]
    assert len(keys) == len(set(keys))
    pairs = Counter(e.group for e in mix if e.source == "hatemoji")
    assert pairs and set(pairs.values()) == {2}


def test_synthetic_spam_collides_with_no_test_text() -> None:
    parts: dict = {("sms", "test"): [ex(generate()[0][0].upper() + "!!", "sms", "spam", (1,))]}
    D.load_synthetic_spam(parts)
    D.dedupe_parts(parts, ["sms", "synthetic_spam"])
    test_keys = {D.dedupe_key(e.text) for e in parts[("sms", "test")]}
    assert not test_keys & {
        D.dedupe_key(e.text) for sp in ("train", "val") for e in parts.get(("synthetic_spam", sp), [])
    }


@pytest.fixture(scope="module")
def real_corpus() -> D.Corpus:
    if not (REAL_DATA / "edos-sexism" / "normalized.csv").exists():
        pytest.skip(f"shared data not at {REAL_DATA}")
    return D.load_corpus(REAL_DATA)


def test_real_corpus_has_no_test_text_in_train_and_a_bounded_mix(real_corpus: D.Corpus) -> None:
    parts = real_corpus.parts
    test_keys = {D.dedupe_key(e.text) for (_, sp), exs in parts.items() if sp == "test" for e in exs}
    assert not any(D.dedupe_key(e.text) in test_keys for (_, sp), exs in parts.items() if sp != "test" for e in exs)
    assert not any(sp == "test" for src, sp in parts if src == "synthetic_spam")
    mix = D.training_mix(real_corpus, "train")
    assert len(mix) <= 36_000
    for task in D.TASKS:
        per_source = Counter(e.source for e in mix if e.task == task and e.group != "ham_donor")
        total = sum(1 for e in mix if e.task == task)
        if task != "category":  # two sources only (AG News, TweetTopic)
            assert max(per_source.values()) / total <= 0.27, (task, per_source)
    tox = Counter(e.source for e in mix if e.task == "toxicity")
    assert [s for s, _ in tox.most_common(2)] == ["olid", "hateval"]
    spam = [e for e in mix if e.task == "spam"]
    assert sum(e.source == "synthetic_spam" for e in spam) / len(spam) <= 0.25
    pair_split: dict[str, set[str]] = {}
    for (src, sp), exs in parts.items():
        for e in exs:
            if src == "hatemoji":
                pair_split.setdefault(e.group.split(":")[0], set()).add(sp)
    assert all(len(s) == 1 for s in pair_split.values())
