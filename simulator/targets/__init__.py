"""Where the simulator sends its events: through the gateway, or straight to Kafka."""
