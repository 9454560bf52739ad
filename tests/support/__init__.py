"""Shared test helpers by topic: the running exchange (harness), raw-socket buyers and
faults (faults), fuzzing strategies (fuzzing)."""
