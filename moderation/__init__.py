"""Real-time streaming content moderation: Kafka posts → three small ONNX models → block/allow/review.

The package is laid out by layer; what serves never imports what builds or measures
(``tests/test_layout.py`` checks it):

- ``core``      settings, errors, logging — shared by every layer
- ``pipeline``  the stages a post flows through: decode → dedupe → tokenize → infer → decide → emit
- ``models``    the shipped model artifacts and the manifest contract they are loaded by
- ``worker``    the Kafka edge: the faust app, batch consumer, producing, commits, probes, metrics, security
- ``score``     the same pipeline over JSON lines, without Kafka
- ``training``  build time only: data sets, training (``train`` extra), evaluation, the fp16 variant
- ``devtools``  for developers: the local broker, demo, produce/tail, benchmarks, fault suite, load test
"""

__version__ = "0.1.0"
