"""Model zoo and experiment configs (installed as ``fpsim.models``); models arrive with the engine."""
