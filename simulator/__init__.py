"""The device fleet simulator."""
