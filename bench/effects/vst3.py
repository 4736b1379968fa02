"""A VST3 (or Audio Unit) plugin by path, with its parameter list from the config:

    [effects.vst3.my_comp]
    path = "/path/to/Comp.vst3"
    params = [{name = "threshold", minimum = -60, maximum = 0, unit = "dB"},
              {name = "ratio", minimum = 1, maximum = 20, scale = "log"}]

Each name is a parameter of the plugin as pedalboard exposes it (``plugin.parameters``). The plugin is loaded once
and reconfigured (then reset) for every clip; that is safe because every call sets every listed parameter.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bench.effects import Effect, EffectError, ParamSpec


class Vst3Effect(Effect):
    def __init__(self, name: str, path: str, params: list[dict], plugin_name: str | None = None):
        self.name = name
        self.path = Path(path)
        if not self.path.exists():
            raise EffectError(f"{name}: no plugin at {self.path}")
        try:
            self.params = [ParamSpec(**p) for p in params]
        except TypeError as e:
            raise EffectError(f"{name}: bad parameter list {params}: {e}") from e
        import pedalboard

        try:
            self._plugin = pedalboard.load_plugin(str(self.path), plugin_name=plugin_name)
        except Exception as e:
            raise EffectError(f"{name}: cannot load plugin {self.path}: {e}") from e
        available = set(self._plugin.parameters)
        missing = [p.name for p in self.params if p.name not in available]
        if missing:
            raise EffectError(f"{name}: plugin has no parameter(s) {missing}; it has {sorted(available)}")
        self._lock = threading.Lock()  # one plugin instance: one clip at a time

    def process_one(self, audio, sample_rate, params01):
        with self._lock:
            return super().process_one(audio, sample_rate, params01)

    def board(self, values, sample_rate):
        for k, v in values.items():
            setattr(self._plugin, k, v)
        self._plugin.reset()
        return self._plugin
