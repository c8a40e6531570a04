"""Pure, typed building blocks of the ANN-SNN pipeline (data sources, encoder, Zarr store, CoLaNET)."""
