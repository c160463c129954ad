"""What `cci worker` runs: the Faust app and its tables, agents and timers,
the ingest process, the profile table, the alert publisher and the garbage-collector
policy. Nothing here imports `streams.dev` or `streams.bench`.
"""
