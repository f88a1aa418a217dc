"""On-disk formats that both readers and writers use (torch-free)."""
