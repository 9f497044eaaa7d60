"""Speed benchmarks that run a fast path and its reference in one process, on the same inputs."""
