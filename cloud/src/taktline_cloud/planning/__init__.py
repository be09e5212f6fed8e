"""Planning: MRP (gross-to-net with pegging, regenerative and net-change) and demand forecast."""
