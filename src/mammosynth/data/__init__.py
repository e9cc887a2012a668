"""Data layer: BI-RADS vocabulary, typed records, readers, imaging ops, the HDF5 store."""
