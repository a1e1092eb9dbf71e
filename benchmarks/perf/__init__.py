"""Performance harnesses: serving latency, training throughput, fp32 vs bf16, simulator throughput."""
