"""Step 1 of PickET: preprocessing, neighborhood features, clustering, semantic labels."""
