"""Benchmarks of the course's pipelines and training against the original course's; see README.md."""
