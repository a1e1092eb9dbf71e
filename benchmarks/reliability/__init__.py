"""Reliability harnesses: fuzzing decoding against an independent page checker."""
