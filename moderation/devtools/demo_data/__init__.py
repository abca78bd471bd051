"""Sample posts written by the team for the demo, tests and benchmarks (not from any data set)."""
