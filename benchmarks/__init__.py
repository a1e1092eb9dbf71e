"""Benchmarks of genpage_hf: studies (`benchmarks.studies`) and performance harnesses (`benchmarks.perf`)."""
