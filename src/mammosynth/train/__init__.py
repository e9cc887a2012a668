"""The one generic training loop. Methods plug in through :class:`mammosynth.train.method.Method`."""
