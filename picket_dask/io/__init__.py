"""Reading and writing: tomograms (MRC, OME-Zarr), label images, picks."""
