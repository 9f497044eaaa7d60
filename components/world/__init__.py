"""The embedded default: a generated world of made-up entities whose pretraining exposure of every fact is known."""
