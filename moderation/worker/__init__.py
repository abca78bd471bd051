"""The Kafka edge: a faust app whose agent micro-batches posts through the shared pipeline."""
