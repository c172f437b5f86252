"""LightningDataModules and the data layer they stand on."""
