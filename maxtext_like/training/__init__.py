"""Training: config -> mesh, model, optimizer, data and checkpoints -> a pure jitted train step in a small loop."""
