"""L2D-Pose library: config, datasets, heatmap decoding, losses, engine, metrics."""
