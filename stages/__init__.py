"""Thin command-line stages over `pipeline`: embed, inspect, train-snn."""
