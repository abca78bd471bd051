"""The Kafka edge: a faust app whose task consumes posts a batch at a time (aiokafka) through the shared
pipeline, produces the outputs, then commits."""
