"""metrics: the secretariat's exact figures, the ops gauges and the capacity plan's inputs, folded from
every canonical event (README.md lists its rooms)."""
