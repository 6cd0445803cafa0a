"""Model loading: hub id or local folder via ``from_pretrained``; ``tiny`` builds a small random
model of the same class, saves it, and loads it back through the same code path."""

SOURCE_FILE = "histosynth_source.json"  # every model folder's provenance note: what it was made from
