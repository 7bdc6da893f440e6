"""Data: sources (phantoms, CBIS-DDSM, folders, npz), the prepared cache, datasets and the DataModule."""
