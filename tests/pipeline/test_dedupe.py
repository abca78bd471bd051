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
