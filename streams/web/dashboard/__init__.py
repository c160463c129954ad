"""The live CCI dashboard every worker serves: view (pure shaping), source (reader), web."""
