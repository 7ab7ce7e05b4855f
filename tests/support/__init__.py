"""Helpers shared by the tests: real components started on loopback, configs written to tmp."""
