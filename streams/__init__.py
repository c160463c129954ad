"""cci-stream: exact, incremental Customer Contact Index per segment from Kafka streams."""

__version__ = "0.1.0"
