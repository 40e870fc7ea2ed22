"""The training layer, above the engine and the numerics: layers (:mod:`.nn`), optimizers,
precision policies and their cast sites, the instrumentation side channel, loss scalers, the
training loop with its run records, datasets, and studies (``fpsim compare``)."""
