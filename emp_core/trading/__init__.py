"""The trading path: which strategy trades, its intents on the latest fused signals, the risk policy's decisions,
the approved orders written to the outbox, and the book the execution journal says we hold."""
