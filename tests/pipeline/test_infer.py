import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from moderation.core.errors import ModelError, ProviderError
from moderation.core.settings import Settings
from moderation.pipeline.infer import CPU, CUDA, OnnxEngine, Scorer, choose_variant, resolve_providers

TEXTS = [
    "you are an idiot and everyone hates you",
    "click here to win a free prize now",
    "the team won the match",
    "",
    "completely unknown words zyx qwv",
]
LONG = " ".join(["parliament passed the budget after a long debate"] * 8)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> OnnxEngine:
    return OnnxEngine(tiny_model_dir, "int8", [CPU], intra_op_threads=1)


def test_scores_have_every_task_and_label_in_range(engine):
    scores = engine.score(TEXTS)
    assert len(scores) == len(TEXTS)
    for s in scores:
        assert {t: list(labels) for t, labels in s.items()} == {
            "toxicity": ["toxic", "insult", "threat"],
            "spam": ["ham", "spam"],
            "category": ["news", "sports", "tech", "other"],
        }
        assert all(0.0 <= p <= 1.0 and isinstance(p, float) for task in s.values() for p in task.values())
        assert sum(s["spam"].values()) == pytest.approx(1.0, abs=1e-5)
        assert sum(s["category"].values()) == pytest.approx(1.0, abs=1e-5)
    # different texts, different scores: the model is really being run
    assert scores[0] != scores[1]


def test_engine_is_a_scorer(engine):
    assert isinstance(engine, Scorer)


def test_score_matches_onnxruntime_run_directly(tiny_model_dir, engine):
    session = ort.InferenceSession(str(tiny_model_dir / "model.int8.onnx"), providers=[CPU])
    batch = engine.tokenizer.encode(TEXTS[:1])
    tox, spam, cat = session.run(
        ["toxicity", "spam", "category"],
        {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask},
    )
    got = engine.score(TEXTS[:1])[0]
    assert list(got["toxicity"].values()) == pytest.approx(tox[0].tolist(), abs=1e-6)
    assert list(got["spam"].values()) == pytest.approx(spam[0].tolist(), abs=1e-6)
    assert list(got["category"].values()) == pytest.approx(cat[0].tolist(), abs=1e-6)


def test_empty_input(engine):
    assert engine.score([]) == []
    arrays = engine.score_arrays([])
    assert {t: a.shape for t, a in arrays.items()} == {"toxicity": (0, 3), "spam": (0, 2), "category": (0, 4)}


def test_score_arrays_shapes_and_dtype(engine):
    arrays = engine.score_arrays([*TEXTS, LONG])
    assert {t: a.shape for t, a in arrays.items()} == {"toxicity": (6, 3), "spam": (6, 2), "category": (6, 4)}
    assert all(a.dtype == np.float32 for a in arrays.values())


@pytest.mark.parametrize("split", [True, False])
def test_batch_padding_invariance(tiny_model_dir, split):
    engine = OnnxEngine(tiny_model_dir, "fp32", [CPU], split_by_bucket=split, warmup=False)
    alone = engine.score_arrays([TEXTS[0]])
    batched = engine.score_arrays([LONG, TEXTS[2], TEXTS[0], LONG + " again"])
    assert engine.tokenizer.encode([LONG]).input_ids.shape[1] > engine.tokenizer.encode([TEXTS[0]]).input_ids.shape[1]
    for task in alone:
        np.testing.assert_allclose(batched[task][2], alone[task][0], atol=1e-5)


def test_rows_keep_input_order_across_buckets(tiny_model_dir):
    engine = OnnxEngine(tiny_model_dir, "fp32", [CPU], warmup=False)
    texts = [LONG, TEXTS[0], LONG + " more", TEXTS[1]]
    together = engine.score_arrays(texts)
    for i, text in enumerate(texts):
        alone = engine.score_arrays([text])
        for task in together:
            np.testing.assert_allclose(together[task][i], alone[task][0], atol=1e-5)


def test_int8_scores_depend_only_slightly_on_batchmates(engine):
    # Dynamic int8 quantizes activations with one scale per tensor, i.e. per batch: a post's
    # scores move a little with its batchmates (this tiny fixture has large weights, hence 0.05;
    # `moderation bench engine` reports the effect on the real model).
    texts = [LONG, TEXTS[0], LONG + " more", TEXTS[1]]
    together = engine.score_arrays(texts)
    for i, text in enumerate(texts):
        alone = engine.score_arrays([text])
        for task in together:
            np.testing.assert_allclose(together[task][i], alone[task][0], atol=0.05)


def test_int8_agrees_with_fp32(tiny_model_dir, engine):
    fp32 = OnnxEngine(tiny_model_dir, "fp32", [CPU])
    a, b = engine.score_arrays(TEXTS), fp32.score_arrays(TEXTS)
    for task in a:
        assert np.abs(a[task] - b[task]).max() < 0.2


def test_info_reports_what_is_served(engine):
    info = engine.info()
    assert info["name"] == "tiny-moderation" and info["version"] == "0.0.1-test"
    assert info["variant"] == "int8" and info["provider"] == CPU == engine.provider
    assert CPU in info["providers_available"]
    assert info["labels"]["spam"] == ["ham", "spam"]
    assert info["buckets"] == [16, 32, 64, 128]
    assert info["iobinding"] is False


def test_auto_variant_on_cpu_is_int8_and_settings_are_honoured(tiny_model_dir):
    settings = Settings(model_dir=tiny_model_dir, length_buckets="8,32", intra_op_threads=1)
    engine = OnnxEngine.from_settings(settings)
    assert engine.variant == "int8"
    # default providers list CUDA first; on this CPU-only build it is filtered out
    expected = CUDA if CUDA in ort.get_available_providers() else CPU
    assert engine.provider == expected
    assert engine.tokenizer.buckets == (8, 32, 128)


def test_choose_variant():
    every = {"int8": True, "fp32": True, "fp16": True}
    assert choose_variant("auto", cuda_active=False, available=every) == "int8"
    assert choose_variant("auto", cuda_active=True, available=every) == "fp16"
    assert choose_variant("auto", cuda_active=True, available={"int8": True, "fp32": True}) == "fp32"
    assert choose_variant("auto", cuda_active=False, available={"fp32": True}) == "fp32"
    assert choose_variant("fp32", cuda_active=False, available=every) == "fp32"
    with pytest.raises(ModelError, match=r"unknown model variant 'int4'"):
        choose_variant("int4", cuda_active=False, available=every)


def test_resolve_providers_keeps_order_and_drops_unavailable():
    assert resolve_providers([CUDA, CPU], [CPU]) == [CPU]
    assert resolve_providers([CUDA, CPU], [CPU, CUDA]) == [CUDA, CPU]
    with pytest.raises(ProviderError, match=r"none of the requested .*MODERATION_PROVIDERS"):
        resolve_providers(["TensorrtExecutionProvider"], [CPU])


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has CUDA")
def test_requiring_cuda_without_it_refuses_to_start(tiny_model_dir):
    with pytest.raises(
        ProviderError, match=r"REQUIRE_PROVIDER=CUDAExecutionProvider but ONNX Runtime is running on CPU"
    ):
        OnnxEngine(tiny_model_dir, "auto", [CUDA, CPU], require_provider=CUDA)


def test_requiring_the_active_provider_is_fine(tiny_model_dir):
    assert OnnxEngine(tiny_model_dir, "int8", [CPU], require_provider=CPU).provider == CPU


def test_iobinding_path_gives_same_scores_on_cpu(engine):
    batch = engine.tokenizer.encode(TEXTS)
    plain, bound = engine.run_batch(batch, iobinding=False), engine.run_batch(batch, iobinding=True)
    for task in plain:
        np.testing.assert_array_equal(plain[task], bound[task])


@pytest.fixture
def damaged_dir(tiny_model_dir, tmp_path):
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_missing_model_file_refuses_to_start(damaged_dir):
    (damaged_dir / "model.int8.onnx").unlink()
    with pytest.raises(ModelError, match=r"model.int8.onnx \(int8\) is missing: restore it with `git checkout --"):
        OnnxEngine(damaged_dir, "int8", [CPU])


def test_corrupt_model_file_refuses_to_start(damaged_dir):
    path = damaged_dir / "model.int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model.int8.onnx \(int8\) is corrupt \(sha256 mismatch"):
        OnnxEngine(damaged_dir, "int8", [CPU])


def test_corrupt_tokenizer_refuses_to_start(damaged_dir):
    (damaged_dir / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match=r"tokenizer.json \(tokenizer\) is corrupt"):
        OnnxEngine(damaged_dir, "int8", [CPU])


def test_manifest_labels_disagreeing_with_graph_fail_warm_up(damaged_dir):
    path = damaged_dir / "manifest.json"
    data = json.loads(path.read_text())
    data["tasks"]["category"]["labels"].append("extra")
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"shape \(1, 4\) but the manifest lists 5 labels for category"):
        OnnxEngine(damaged_dir, "int8", [CPU])


def test_graph_without_contract_outputs_is_rejected(damaged_dir):
    path = damaged_dir / "manifest.json"
    data = json.loads(path.read_text())
    data["tasks"]["spam"]["output"] = "spam_probs"
    path.write_text(json.dumps(data))
    with pytest.raises(
        ModelError, match=r"does not follow the contract.*missing inputs \[\], outputs \['spam_probs'\]"
    ):
        OnnxEngine(damaged_dir, "int8", [CPU])


def test_concurrent_scoring_matches_sequential(engine):
    batches = [[f"{TEXTS[i % 5]} {'team ' * (i % 40)}", TEXTS[(i + 1) % 5], LONG] for i in range(48)]
    sequential = [engine.score(b) for b in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(engine.score, batches))
    assert concurrent == sequential


def test_serving_path_never_imports_torch():
    modules = "moderation.pipeline.infer, moderation.pipeline.tokenize, moderation.models.manifest"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_cuda_fallback_is_detected_and_serves_the_cpu_variant(tiny_model_dir, monkeypatch, caplog):
    # Pretend this onnxruntime build offers CUDA: ORT then tries it, cannot use it, and falls back
    # to CPU exactly as onnxruntime-gpu does without a usable driver.
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with caplog.at_level("WARNING", logger="moderation.pipeline.infer"):
        engine = OnnxEngine(tiny_model_dir, "auto", [CUDA, CPU])
    assert engine.provider == CPU
    assert engine.variant == "int8"  # auto chose fp32 for CUDA, then the CPU variant after the fallback
    assert engine.info()["iobinding"] is False
    assert "CUDA was requested but ONNX Runtime fell back" in caplog.text
    assert engine.score(TEXTS[:1])[0]["spam"].keys() == {"ham", "spam"}
    with pytest.raises(ProviderError, match="CUDA libraries"):
        OnnxEngine(tiny_model_dir, "auto", [CUDA, CPU], require_provider=CUDA)


def test_split_for_runs_balances_and_keeps_small_batches_whole():
    from moderation.pipeline.infer import MIN_ROWS_PER_RUN, split_for_runs

    rows = list(range(64))
    assert split_for_runs([rows], 1) == [rows]
    halves = split_for_runs([rows], 2)
    assert [len(c) for c in halves] == [32, 32] and sorted(r for c in halves for r in c) == rows
    assert len(split_for_runs([rows], 4)) == 4
    small = list(range(2 * MIN_ROWS_PER_RUN - 1))
    assert split_for_runs([small], 2) == [small]  # not worth a second run
    two_buckets = split_for_runs([list(range(40)), list(range(40, 44))], 2)
    assert sorted(len(c) for c in two_buckets) == [4, 40]  # already two runs: nothing to split


@pytest.mark.parametrize("runs", [2, 3])
def test_parallel_runs_score_like_one_run(tiny_model_dir, runs):
    texts = [f"post number {i} " + "word " * (i % 40) for i in range(100)]
    one = OnnxEngine(tiny_model_dir, variant="fp32", intra_op_threads=1).score_arrays(texts)
    many = OnnxEngine(tiny_model_dir, variant="fp32", intra_op_threads=1, parallel_runs=runs)
    assert many.parallel_runs == runs
    for _ in range(3):  # the pool is reused across calls
        got = many.score_arrays(texts)
        for task in one:
            np.testing.assert_allclose(got[task], one[task], rtol=1e-5, atol=1e-6)


def test_text_is_prepared_as_the_manifest_says_the_model_was_trained(tiny_model_dir, tmp_path):
    # models since 2.0.0 were trained on emoji-as-words; older ones (no `text_preparation`) on the raw text
    older = tmp_path / "older"
    shutil.copytree(tiny_model_dir, older)
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["text_preparation"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    current = OnnxEngine(tiny_model_dir, variant="int8", providers=(CPU,))
    before = OnnxEngine(older, variant="int8", providers=(CPU,))
    assert current.tokenizer.emoji_to_words and not before.tokenizer.emoji_to_words
    text = "go \N{HOCHO} now"
    assert current.tokenizer.token_ids([text]) == current.tokenizer.token_ids(["go kitchen knife now"])
    assert before.tokenizer.token_ids([text]) != before.tokenizer.token_ids(["go kitchen knife now"])
