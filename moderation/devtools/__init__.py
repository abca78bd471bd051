"""Developer tooling: the local Kafka broker, the demo, produce/tail, worker launching, benchmarks, the
fault suite and the Locust load-test driver. Nothing on the serving path imports this package."""
