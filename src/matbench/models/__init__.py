"""Plain ``nn.Module`` models: no Lightning import, unit-testable and exportable."""
