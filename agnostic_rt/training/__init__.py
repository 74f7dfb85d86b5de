"""Training state across machines: devices, the state contract, migration, checkpoints, checkpoint
stores and preemption. Imports nothing of the compiler but targets.py (an import-linter contract)."""
