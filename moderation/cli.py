"""``moderation`` command line: one entry point, one subcommand per job.

Handlers import their modules lazily so ``moderation --help`` stays fast and so that commands that
need optional extras (``models build`` needs the ``train`` extra) fail only when they are used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from moderation import __version__
from moderation.core.errors import ModerationError

Handler = Callable[[argparse.Namespace], int]


def _kafka(args: argparse.Namespace) -> int:
    from moderation.devtools.broker.cli import run

    return run(args)


def _models(args: argparse.Namespace) -> int:
    from moderation.training.cli import run

    return run(args)


def _bench(args: argparse.Namespace) -> int:
    from moderation.devtools.bench.cli import run

    return run(args)


def _worker(args: argparse.Namespace) -> int:
    from moderation.worker.cli import run_worker

    return run_worker(args)


def _score(args: argparse.Namespace) -> int:
    from moderation.worker.score import run

    return run(args)


def _serve(args: argparse.Namespace) -> int:
    from moderation.api.cli import run

    return run(args)


def _replay(args: argparse.Namespace) -> int:
    from moderation.worker.replay import run

    return run(args)


def _llm_review(args: argparse.Namespace) -> int:
    from moderation.review.consumer import run

    return run(args)


def _console(args: argparse.Namespace) -> int:
    from moderation.review.console.app import run

    return run(args)


def _produce(args: argparse.Namespace) -> int:
    from moderation.devtools.tools import run_produce

    return run_produce(args)


def _tail(args: argparse.Namespace) -> int:
    from moderation.devtools.tools import run_tail

    return run_tail(args)


def _demo(args: argparse.Namespace) -> int:
    from moderation.devtools.demo import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moderation",
        description="Streaming content moderation: Kafka posts → toxicity/spam/category SLMs → decisions.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser("kafka", help="Run a local single-node Apache Kafka (KRaft) broker.")
    kafka.add_argument("action", choices=["up", "down", "status", "install"])
    kafka.add_argument("--port", type=int, default=None, help="Broker port (default 9092, or a free one).")
    kafka.add_argument("--timeout", type=float, default=None, help="Seconds `up` waits for the broker (120).")
    kafka.set_defaults(handler=_kafka)

    models = sub.add_parser("models", help="Build, verify and evaluate the three SLMs.")
    models.add_argument(
        "action",
        choices=[
            "build", "eval", "verify", "info", "quantize", "derive", "fp16", "reference", "feedback", "loso", "bands",
        ],
    )  # fmt: skip
    models.add_argument("--data-dir", default="../shared/data", help="Labelled data sets (build/eval).")
    models.add_argument("--out", default=None, help="Artifact directory (default: the packaged models).")
    models.add_argument("--quick", action="store_true", help="Tiny run for smoke tests, not for release.")
    models.add_argument(
        "--feedback",
        default=None,
        help="feedback: JSON-lines file to write the reviewers' verdicts to (feedback.jsonl); build: such a "
        "file to add to train/val (never test).",
    )
    models.add_argument(
        "--teacher",
        default="e5-small-v2",
        help="build: the 12-layer teacher distilled into the served model (e5-small-v2 | bge-small-en-v1.5 | none).",
    )
    models.add_argument(
        "--accurate-out", default=None, help="build: where the teacher goes as the accurate variant "
        "(default build/models/moderation-e5-accurate)."
    )
    models.add_argument(
        "--targets",
        default="0.02,0.05,0.10",
        help="bands: escalation targets to fit review bands for (shares of traffic, comma separated).",
    )
    models.add_argument(
        "--compare", action="append", default=None, metavar="NAME=DIR",
        help="eval: also score the model in DIR on the same test sets (repeatable), e.g. v1.0.0=build/models/v1.",
    )
    models.add_argument(
        "--source", default=None, help="quantize: the dynamically quantized int8 file to convert (default: the "
        "manifest's int8 file)."
    )
    models.add_argument("--version", default=None, help="quantize: the version the converted model gets.")
    models.add_argument(
        "--variants", default=None, help="derive: which variants to derive from the shipped int8 (fp32,fp16)."
    )
    models.add_argument(
        "--record", action="store_true", help="derive: record the derived files' digests in the manifest (release)."
    )
    models.add_argument("--posts", default=None, help="reference: JSON lines of real traffic.")
    models.add_argument("--synthetic", type=int, default=2000, help="reference: synthetic posts in the default mix.")
    models.set_defaults(handler=_models)

    bench = sub.add_parser(
        "bench", help="Benchmarks (engine alone, or end to end through Kafka) and the fault suite (faults)."
    )
    bench.add_argument("target", choices=["engine", "pipeline", "gpu", "hotpath", "faults", "soak"])
    bench.add_argument("--out", default=None, help="Write results (JSON/markdown) here.")
    bench.add_argument(
        "--seconds", type=float, default=None, help="Time budget per measurement (soak: its length, default 4800)."
    )
    bench.add_argument("--batch-sizes", default=None, help="Comma-separated batch sizes (engine, gpu).")
    bench.add_argument("--variants", default=None, help="Comma-separated model variants (engine: int8,fp32).")
    bench.add_argument("--posts", type=int, default=None, help="Posts per throughput run (pipeline).")
    bench.add_argument("--quick", action="store_true", help="Tiny run for smoke tests, not for numbers (pipeline).")
    bench.add_argument(
        "--processes", default=None, help="Comma-separated worker process counts sharing a topic (hotpath)."
    )
    bench.add_argument(
        "--baseline",
        default=None,
        help="Another checkout whose worker runs alternately with this one (hotpath) or beside it (soak).",
    )
    bench.add_argument("--rounds", type=int, default=None, help="Repeat every measurement this many times (hotpath).")
    bench.add_argument("--model", action="store_true", help="The real model instead of the free scorer (hotpath).")
    bench.add_argument("--dry-run", action="store_true", help="Every step on the CPU, small sizes (gpu).")
    bench.add_argument(
        "--compare-env", default=None, help="KEY=VALUE[,…]: also run each measurement with these settings (hotpath)."
    )
    bench.add_argument("--kills", type=int, default=None, help="Worker SIGKILLs during the stream (faults).")
    bench.add_argument("--rate", type=float, default=None, help="Posts per second (soak: default 28).")
    bench.add_argument(
        "--scenarios", default=None, help="Comma-separated subset of kill,poison,codecs (faults; default all)."
    )
    bench.add_argument(
        "--report",
        default=None,
        help="Markdown file whose fault-suite section is rewritten (faults: RELIABILITY.md; - for none).",
    )
    bench.set_defaults(handler=_bench)

    worker = sub.add_parser("worker", help="Run a stream worker (faust app, batch consumer) until SIGTERM.")
    worker.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Run N worker processes under one supervisor (e.g. N per GPU); probes and metrics on the one port.",
    )
    worker.set_defaults(handler=_worker)

    score = sub.add_parser("score", help="Score JSON-lines posts without Kafka; decisions to stdout.")
    score.add_argument("file", nargs="?", default="-", help="JSON-lines file, or - for stdin.")
    score.set_defaults(handler=_score)

    serve = sub.add_parser(
        "serve",
        help="The synchronous scoring API: Perspective's AnalyzeComment (POST /v1alpha1/comments:analyze), "
        "POST /v1/moderate and the discovery document, on MODERATION_API_PORT.",
    )
    serve.set_defaults(handler=_serve)

    replay = sub.add_parser(
        "replay",
        help="Re-decide recorded decisions (their posts fetched by origin) with the loaded model and policy; "
        "report how many reproduce (exit 0 all, 1 some differ, 2 usage or version mismatch).",
    )
    pick = replay.add_argument_group("which records of MODERATION_DECISIONS_TOPIC")
    pick.add_argument("--all", action="store_true", help="Every record up to the end offsets at start.")
    pick.add_argument("--since", default=None, help="From this time: RFC 3339 or back from now (30m, 1h, 2d).")
    pick.add_argument("--until", default=None, help="Before this time (the same forms).")
    pick.add_argument("--partition", type=int, default=None, help="Only this partition of the decisions topic.")
    pick.add_argument("--from-offset", type=int, default=None, help="First offset of --partition.")
    pick.add_argument("--to-offset", type=int, default=None, help="Last offset of --partition (inclusive).")
    pick.add_argument("--post-id", action="append", default=None, help="Only this post's records (repeatable).")
    replay.add_argument("--strict", action="store_true", help="Exit 2 if any record names another model or policy.")
    replay.add_argument("--json", action="store_true", help="The report as JSON on stdout, for machines.")
    replay.add_argument("--out", default=None, help="Write the JSON report to this file.")
    replay.add_argument("--show", type=int, default=20, help="List at most N differing records (0: all).")
    replay.set_defaults(handler=_replay)

    llm_review = sub.add_parser(
        "llm-review", help="Answer the llm-review topic with an OpenAI-compatible LLM; verdicts to Kafka."
    )
    llm_review.set_defaults(handler=_llm_review)

    console = sub.add_parser("console", help="The reviewer console: live queue, decide, overview (web app).")
    console.set_defaults(handler=_console)

    produce = sub.add_parser("produce", help="Produce JSON-lines posts from a file to the input topic.")
    produce.add_argument("--file", required=True, help="JSON-lines file (each line is sent as-is).")
    produce.add_argument("--rate", type=float, default=0, help="Posts per second; 0 = as fast as possible.")
    produce.add_argument("--topic", default=None, help="Override the input topic.")
    produce.add_argument("--repeat", type=int, default=1, help="Send the file this many times.")
    produce.set_defaults(handler=_produce)

    tail = sub.add_parser("tail", help="Print records of a topic as they arrive.")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=0, help="Stop after this many records (0 = never).")
    tail.set_defaults(handler=_tail)

    demo = sub.add_parser("demo", help="Broker + worker + sample stream, decisions live, then a summary.")
    demo.add_argument("--rate", type=float, default=40.0, help="Sample posts per second.")
    demo.add_argument("--repeat", type=int, default=3, help="Times the sample file is replayed.")
    demo.set_defaults(handler=_demo)
    return parser


# Commands that start through moderation.core.process.settings_for_process: they log their own
# start-up problems (invalid settings, unknown MODERATION_* variables) as JSON lines.
LOGGING_COMMANDS = frozenset({"worker", "llm-review", "console", "serve"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    if args.command not in LOGGING_COMMANDS:
        from moderation.core.settings import unknown_env_warnings

        for warning in unknown_env_warnings():
            print(f"warning: {warning}", file=sys.stderr)
    try:
        return handler(args)
    except ModerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError) and exc.title == "Settings":  # a MODERATION_* value is invalid
            from moderation.core.process import describe_settings_error

            print(f"error: {describe_settings_error(exc)}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
