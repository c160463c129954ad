"""``cci bench``: the pipeline's throughput, latency and memory next to a raw consumer and a peer.

* ``traffic``  — how many users make N events, cutting a data set to N, latency-phase events;
* ``measure``  — percentiles, latency matching, when a topic's figures settled, /proc and /metrics;
* ``report``   — the figures of a run as a terminal table and as JSON;
* ``run``      — the orchestration: broker, topics, ceiling, peer, worker, latency, cleanup.
"""
