"""Device drivers: each module is the only importer of its protocol library."""
