"""Step 2 of PickET: particle mask, instances (connected components or watershed), centroids."""
