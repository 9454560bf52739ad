"""Loading and validating the configuration."""
