"""Model artifacts: manifest, build (train extra), evaluation."""
