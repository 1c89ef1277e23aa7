"""Robot episode data: RLDS/TFDS readers, dataset builders, Grain pipeline, mixture captions."""
