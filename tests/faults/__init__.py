"""Hostile buyers, careless sellers, a database that fails, crashes, fuzzing."""
