"""The one seam to ClickHouse (chDB embedded or a server): schema versions,
inserts, read-only queries, and `cci query` / `cci report` on top.
"""
