"""The pipeline's stages as pure code (no Kafka, no Faust): validate,
enrich, deduplicate, aggregate, emit, alerts, and the reference recount the tests compare
against.
"""
