"""cardbench: GPU micro-benchmarks normalized against the spec sheet."""
