"""Development helpers: an embedded Kafka-compatible broker, topic creation, a JSONL producer.

Nothing here is used by the worker itself; these are the pieces behind `cci dev broker`,
`cci topics create`, `cci produce` and the integration tests.
"""
