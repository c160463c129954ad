"""Kafka plumbing shared by the worker and the tools: topic followers, topic
creation (`cci topics create`) and the embedded-broker workarounds.
"""
