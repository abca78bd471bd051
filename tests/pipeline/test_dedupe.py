from moderation.pipeline.dedupe import ScoreCache, normalize_text, plan_inference, text_key


def test_normalisation_ignores_case_width_and_whitespace():
    assert normalize_text("  FREE\tcrypto  ＧＩＶＥＡＷＡＹ\n") == "free crypto giveaway"
    assert text_key("Win  NOW") == text_key("win now")
    assert text_key("win now") != text_key("win later")


def test_lru_evicts_least_recently_used():
    cache = ScoreCache(2)
    cache.put(b"a", {"t": {"x": 0.1}})
    cache.put(b"b", {"t": {"x": 0.2}})
    assert cache.get(b"a") is not None  # a is now most recent
    cache.put(b"c", {"t": {"x": 0.3}})
    assert cache.get(b"b") is None and cache.get(b"a") is not None and len(cache) == 2
    assert cache.hits == 2 and cache.misses == 1


def test_disabled_cache_stores_nothing():
    cache = ScoreCache(0)
    cache.put(b"a", {})
    assert len(cache) == 0


def test_plan_collapses_duplicates_and_uses_cache():
    cache = ScoreCache(10)
    cache.put(text_key("seen before"), {"spam": {"spam": 0.9}})
    keys, cached, todo = plan_inference(["Buy now", "buy   NOW", "seen before", "fresh"], cache)
    assert keys[0] == keys[1]
    assert list(todo.values()) == ["Buy now", "fresh"]
    assert cached == {text_key("seen before"): {"spam": {"spam": 0.9}}}


SCORES = {
    "toxicity": {"toxic": 0.33650946617126465, "hate": 0.17926350235939026, "targeted": 0.16400843858718872},
    "spam": {"ham": 0.02103571593761444, "spam": 0.9789642691612244},
    "category": {
        "world_politics": 0.11274338513612747, "sports": 0.054002318531274796, "business_finance": 0.1378315091133,
        "science_technology": 0.05293288826942444, "entertainment_culture": 0.05625144, "lifestyle": 0.586238443851,
    },
}  # fmt: skip  (the shipped model's layout: 11 labels in 3 tasks)


def test_a_hit_returns_exactly_what_was_put_as_fresh_dicts():
    cache = ScoreCache(10)
    cache.put(b"k", SCORES)
    got = cache.get(b"k")
    assert got == SCORES and list(got) == list(SCORES)  # same values (doubles, lossless) and order
    assert all(list(got[t]) == list(SCORES[t]) for t in SCORES)
    got["spam"]["spam"] = 0.0  # a caller changing its copy does not change the cache
    assert cache.get(b"k") == SCORES
    cache.put(b"other", {"t": {"x": 1e-300}})  # a second layout
    assert cache.get(b"other") == {"t": {"x": 1e-300}} and cache.get(b"k") == SCORES
    cache.put(b"empty", {})
    assert cache.get(b"empty") == {}


def test_an_entry_costs_a_few_hundred_bytes_not_a_kilobyte():
    import copy
    import tracemalloc

    n = 20_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = ScoreCache(n)
        for i in range(n):  # fresh dicts per entry, as the engine returns them
            cache.put(text_key(f"post {i}"), copy.deepcopy(SCORES))
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert len(cache) == n
    # packed: the 16-byte key, one bytes of 2 + 11 × 8, the LRU's links; as dicts of floats it was ~1,250 B
    assert per_entry < 400, per_entry
