"""Stage 2: networks, pretrained backbones and their embeddings."""

#: Heads a model can put on a backbone's embeddings (here, not in models.py: settings check them without
#: torch).
HEADS = ("mlp", "linear")
