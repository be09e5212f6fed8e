"""Sales: customers, sales orders and the delivery promises of their lines."""
