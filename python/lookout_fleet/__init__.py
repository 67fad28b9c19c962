"""lookout-fleet: lookout's batch replay (`lookout batch`) spread over a Ray cluster, one Ray
task per drive, and the fleet report of a result folder."""

__version__ = "0.1.0"
