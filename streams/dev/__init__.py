"""Development helpers: an embedded Kafka broker, a JSONL producer, the generator, the demo.

Nothing here is used by the worker itself; these are the pieces behind `cci dev broker`,
`cci produce`, `cci generate`, `cci demo` and the integration tests.
"""
