"""The buyer transport against real loopback servers."""
