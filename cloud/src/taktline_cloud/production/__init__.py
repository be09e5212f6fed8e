"""Production: counts from counter series, work orders and their posting."""
