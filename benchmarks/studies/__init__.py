"""Studies in the simulated world and on MovieLens, one script each: `python -m benchmarks.studies.<name>`."""
