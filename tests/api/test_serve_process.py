"""``moderation serve`` as a process, called by real clients: Google's own ``commentanalyzer`` client
(google-api-python-client, built from this server's discovery document), requests for a fuzz test over
request bodies, and the shipped model for the scores.
"""

from __future__ import annotations

import io
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from googleapiclient import discovery
from googleapiclient.errors import HttpError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moderation.core.settings import DEFAULT_MODEL_DIR, DEFAULT_POLICY_FILE, Settings
from moderation.devtools.launch import WorkerProcess, free_port
from moderation.worker.score import score_stream

KEY = "process-key-0001"
SECRET_TEXT = "zebra-marmalade-7731 you utter fool"  # must never appear in a log line


class Served:
    def __init__(self, proc: WorkerProcess, api_port: int) -> None:
        self.proc, self.api_port = proc, api_port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def client(self) -> Any:
        """Exactly how Perspective's docs build the client; only the discovery URL points here."""
        return discovery.build(
            "commentanalyzer",
            "v1alpha1",
            discoveryServiceUrl=self.url("/$discovery/rest?version=v1alpha1"),
            developerKey=KEY,
        )


def serve(tmp_path: Path, env: dict[str, str], name: str) -> Served:
    api_port = free_port()
    proc = WorkerProcess(
        name,
        {
            "MODERATION_API_KEYS": f"tests:{KEY}",
            "MODERATION_API_PORT": str(api_port),
            "MODERATION_LOG_LEVEL": "debug",
            "MODERATION_DEDUPE_CACHE_SIZE": "0",
            **env,
        },
        tmp_path / f"{name}.log",
        module=("moderation.cli", "serve"),
    )
    proc.wait_ready(120)
    return Served(proc, api_port)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_policy_file: Path) -> Iterator[Served]:
    env = {"MODERATION_MODEL_DIR": str(tiny_model_dir), "MODERATION_POLICY_FILE": str(tiny_policy_file)}
    served = serve(tmp_path_factory.mktemp("serve-tiny"), env, "api-tiny")
    yield served
    served.proc.terminate(30)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {"MODERATION_MODEL_DIR": str(DEFAULT_MODEL_DIR), "MODERATION_POLICY_FILE": str(DEFAULT_POLICY_FILE)}
    served = serve(tmp_path_factory.mktemp("serve-shipped"), env, "api-shipped")
    yield served
    served.proc.terminate(30)


def test_googles_client_gets_scores_from_the_shipped_model(shipped: Served) -> None:
    service = shipped.client()
    friendly = (
        service.comments()
        .analyze(
            body={
                "comment": {"text": "friendly greetings from python"},
                "requestedAttributes": {"TOXICITY": {}},
                "clientToken": "t-1",
            }
        )
        .execute()
    )
    rude = (
        service.comments()
        .analyze(
            body={
                "comment": {"text": "shut up you worthless idiot, nobody wants you here"},
                "languages": ["en"],
                "requestedAttributes": {"TOXICITY": {}, "IDENTITY_ATTACK": {}, "SPAM": {}},
            }
        )
        .execute()
    )
    assert friendly["clientToken"] == "t-1" and friendly["detectedLanguages"] == ["en"]
    assert set(rude["attributeScores"]) == {"TOXICITY", "IDENTITY_ATTACK", "SPAM"}
    low = friendly["attributeScores"]["TOXICITY"]["summaryScore"]
    high = rude["attributeScores"]["TOXICITY"]["summaryScore"]
    assert low["type"] == high["type"] == "PROBABILITY"
    assert low["value"] < 0.3 < 0.7 < high["value"]
    with pytest.raises(HttpError) as info:  # an attribute the models lack: refused, never made up
        service.comments().analyze(
            body={"comment": {"text": "hello"}, "requestedAttributes": {"SEVERE_TOXICITY": {}}}
        ).execute()
    assert info.value.status_code == 400 and "Unknown requested attribute: SEVERE_TOXICITY" in info.value.reason
    assert info.value.error_details[0]["errorType"] == "UNKNOWN_REQUESTED_ATTRIBUTE"
    with pytest.raises(HttpError) as info:  # a language the model was not trained on, as Perspective refuses it
        service.comments().analyze(
            body={
                "comment": {"text": "eres un idiota y nadie te quiere aquí, vete ya"},
                "requestedAttributes": {"TOXICITY": {}},
            }
        ).execute()
    assert info.value.status_code == 400
    assert info.value.error_details[0]["errorType"] == "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE"


def test_moderate_with_the_shipped_model_is_moderation_scores_decision(shipped: Served) -> None:
    post = {"id": "p-1", "text": "win a free iphone!!! click here http://bit.ly/x", "author_id": "a"}
    answer = requests.post(shipped.url("/v1/moderate"), json=post, params={"key": KEY}, timeout=30)
    assert answer.status_code == 200
    out = io.BytesIO()
    score_stream(
        io.BytesIO(orjson.dumps(post) + b"\n"),
        "t",
        out,
        io.BytesIO(),
        Settings(model_dir=DEFAULT_MODEL_DIR, policy_file=DEFAULT_POLICY_FILE, dedupe_cache_size=0),
    )
    expected = orjson.loads(out.getvalue())
    got = answer.json()
    for name in ("action", "labels", "reasons", "triggers", "scores", "language", "policy_version", "model"):
        assert got[name] == expected[name], name
    assert got["action"] == "block" and "spam.spam" in got["labels"]


def test_googles_client_against_the_tiny_model_and_its_errors(tiny: Served) -> None:
    service = tiny.client()
    answer = (
        service.comments()
        .analyze(
            body={"comment": {"text": SECRET_TEXT}, "requestedAttributes": {"TOXICITY": {}, "INSULT": {}, "THREAT": {}}}
        )
        .execute()
    )
    assert set(answer["attributeScores"]) == {"TOXICITY", "INSULT", "THREAT"}
    bad = discovery.build(
        "commentanalyzer",
        "v1alpha1",
        discoveryServiceUrl=tiny.url("/$discovery/rest?version=v1alpha1"),
        developerKey="not-the-key-0001",
    )
    with pytest.raises(HttpError) as info:
        bad.comments().analyze(body={"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}}).execute()
    assert info.value.status_code == 400 and info.value.reason == "API key not valid. Please pass a valid API key."
    with pytest.raises(HttpError) as info:
        service.comments().suggestscore(body={"comment": {"text": "hi"}}).execute()
    assert info.value.status_code == 501


# --- fuzz: any body gets a 200 or a documented 4xx in Google's error shape, never a 5xx -------------------

NAMES = st.sampled_from(
    [
        "comment",
        "text",
        "type",
        "requestedAttributes",
        "requested_attributes",
        "languages",
        "doNotStore",
        "clientToken",
        "sessionId",
        "communityId",
        "context",
        "entries",
        "articleAndParentComment",
        "scoreType",
        "scoreThreshold",
        "spanAnnotations",
        "TOXICITY",
        "SPAM",
        "INSULT",
        "id",
        "lang",
        "created_at",
        "author_id",
    ]
) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["TOXICITY", "PROBABILITY", "RAW", "PLAIN_TEXT", "HTML", "en", "es", "und", "", " "])
)
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(NAMES, c, max_size=5), max_leaves=25)
ATTRS = st.dictionaries(st.sampled_from(["TOXICITY", "SPAM", "INSULT", "SEVERE_TOXICITY", "toxicity", ""]), VALUES)
ANALYZE_LIKE = st.fixed_dictionaries(
    {
        "comment": st.fixed_dictionaries({"text": st.text(max_size=60) | SCALARS}, optional={"type": SCALARS}),
        "requestedAttributes": ATTRS | VALUES,
    },
    optional={
        "languages": st.lists(st.text(max_size=6), max_size=3) | VALUES,
        "doNotStore": SCALARS,
        "clientToken": SCALARS,
        "context": VALUES,
        "spanAnnotations": SCALARS,
    },
)
POST_LIKE = st.fixed_dictionaries(
    {"text": st.text(max_size=60) | SCALARS},
    optional={"id": SCALARS, "lang": SCALARS, "created_at": SCALARS, "context": VALUES, "doNotStore": SCALARS},
)
PARAMS = st.fixed_dictionaries({}, optional={"scoreThreshold": st.floats(0, 1), "scoreType": st.just("PROBABILITY")})
NEARLY_VALID = st.fixed_dictionaries(  # reaches the model: any text, any served attribute set, odd languages
    {
        "comment": st.fixed_dictionaries({"text": st.text(min_size=1, max_size=300)}),
        "requestedAttributes": st.dictionaries(
            st.sampled_from(["TOXICITY", "SPAM", "INSULT", "THREAT"]), PARAMS, min_size=1
        ),
    },
    optional={
        "languages": st.lists(st.sampled_from(["en", "en-US", "und", "es", "zh-Hant", "xx", ""]), max_size=3),
        "doNotStore": st.booleans(),
        "clientToken": st.text(max_size=20),
    },
)
BODIES = (
    VALUES.map(orjson.dumps)
    | ANALYZE_LIKE.map(orjson.dumps)
    | NEARLY_VALID.map(orjson.dumps)
    | POST_LIKE.map(orjson.dumps)
    | st.binary(max_size=120)
)
DOCUMENTED = {200, 400, 413}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, path=st.sampled_from(["/v1alpha1/comments:analyze", "/v1/moderate"]))
def test_fuzzed_bodies_get_200_or_a_documented_4xx(tiny: Served, body: bytes, path: str) -> None:
    answer = requests.post(tiny.url(path), data=body, params={"key": KEY}, timeout=30)
    assert answer.status_code in DOCUMENTED, (answer.status_code, body[:200], answer.text[:300])
    doc = answer.json()
    if answer.status_code == 200:
        assert ("attributeScores" in doc) if path.endswith("analyze") else ("action" in doc)
    else:
        error = doc["error"]
        assert error["code"] == answer.status_code and error["status"] == "INVALID_ARGUMENT" and error["message"]


def test_post_text_never_reaches_the_logs_even_at_debug(tiny: Served) -> None:
    requests.post(tiny.url("/v1/moderate"), json={"text": SECRET_TEXT}, params={"key": KEY}, timeout=30)
    requests.post(tiny.url("/v1/moderate"), data=b'{"text": "' + SECRET_TEXT.encode(), params={"key": KEY}, timeout=30)
    logged = tiny.proc.log_path.read_text(errors="replace")
    assert '"event": "request"' in logged  # debug lines were written
    assert "zebra-marmalade" not in logged


def test_sigterm_drains_and_exits_zero(tmp_path: Path, tiny_model_dir: Path, tiny_policy_file: Path) -> None:
    served = serve(
        tmp_path,
        {"MODERATION_MODEL_DIR": str(tiny_model_dir), "MODERATION_POLICY_FILE": str(tiny_policy_file)},
        "api-stop",
    )
    assert requests.post(served.url("/v1/moderate"), json={"text": "hi"}, params={"key": KEY}, timeout=30).ok
    served.proc.proc.send_signal(signal.SIGTERM)
    assert served.proc.proc.wait(30) == 0
    events = [e["event"] for e in served.proc.events()]
    assert events.index("shutdown_requested") < events.index("drained") < events.index("stopped")


def test_startup_errors_are_one_line_and_exit_2(tmp_path: Path, tiny_model_dir: Path, tiny_policy_file: Path) -> None:
    base = {
        "MODERATION_MODEL_DIR": str(tiny_model_dir),
        "MODERATION_POLICY_FILE": str(tiny_policy_file),
        "MODERATION_API_KEYS": "",
        "MODERATION_LOG_FORMAT": "json",
    }
    no_keys = WorkerProcess("no-keys", base, tmp_path / "no-keys.log", module=("moderation.cli", "serve"))
    assert no_keys.proc.wait(60) == 2
    (line,) = [e for e in no_keys.events() if e["event"] == "startup_failed"]
    assert "no API keys" in line["error"] and "MODERATION_API_KEYS" in line["error"]
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = WorkerProcess(
            "busy",
            {**base, "MODERATION_API_KEYS": f"t:{KEY}", "MODERATION_API_PORT": str(port)},
            tmp_path / "busy.log",
            module=("moderation.cli", "serve"),
        )
        assert taken.proc.wait(120) == 2
    (line,) = [e for e in taken.events() if e["event"] == "startup_failed"]
    assert "MODERATION_API_PORT" in line["error"]
