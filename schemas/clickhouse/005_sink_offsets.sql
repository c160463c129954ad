-- Version 5: what the store holds, in the sink's terms.
--
-- Per sink consumer group and topic-partition: every record before `next_offset` is in the
-- tables. The sink writes these rows after each batch's rows, so they never claim rows that are
-- not there. On start it compares them with the group's committed offsets: a store behind them
-- (its tables lost, restored from an old backup) is rebuilt from the topics (streams/sink.py).
CREATE TABLE IF NOT EXISTS cci_sink_offsets
(
    group_id String COMMENT 'the sink consumer group (one per embedded store)',
    topic String,
    partition UInt32,
    next_offset UInt64 COMMENT 'every record of the partition before this offset is written',
    written_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (group_id, topic, partition);
