"""The herd version: part of every job fingerprint, so an upgrade re-runs what it must."""

HERD_VERSION = "0.1.0"
