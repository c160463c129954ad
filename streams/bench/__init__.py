"""``cci bench``: the pipeline's throughput, latency and memory next to a raw consumer and a peer.

* ``traffic``  — how many users make N events, cutting a data set to N, latency-phase events;
* ``measure``  — percentiles, latency matching, when a topic's figures settled, /proc and /metrics;
* ``report``   — the figures of a run as a terminal table and as JSON;
* ``phase``    — what the phases share: errors, timeouts, progress lines, the state folder;
* ``workload`` — the data: generated, cut to N, recounted, loaded into the broker;
* ``outputs``  — reading an output topic until it equals the recount;
* ``ceiling``, ``peer_run``, ``pipeline_run``, ``latency`` — one phase each;
* ``run``      — the orchestration: broker, topics, the phases in turn, cleanup;
* ``peers/``   — the same job written with each peer framework, and their environments.
"""
