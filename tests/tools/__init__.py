"""The buyer simulator and the benchmark."""
