"""The ClickHouse sink: figures and deduplicated facts become rows, written in
batches, with the input offsets committed only once ClickHouse has them.
"""
