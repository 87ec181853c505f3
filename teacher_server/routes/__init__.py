"""One router per resource: features, info, health (+ metrics)."""
