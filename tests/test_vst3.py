import os
from pathlib import Path

import numpy as np
import pytest

from bench.effects import EffectError, probe_signal
from bench.effects.vst3 import Vst3Effect

PLUGIN = os.environ.get("AFX_VST3_PLUGIN")  # path to any VST3 plugin, and one of its parameters
PARAM = os.environ.get("AFX_VST3_PARAM")


def test_missing_plugin_is_a_clear_error(tmp_path):
    with pytest.raises(EffectError, match="my_fx: no plugin at"):
        Vst3Effect("my_fx", str(tmp_path / "nothing.vst3"), [])


@pytest.mark.skipif(not (PLUGIN and PARAM and Path(PLUGIN).exists()),
                    reason="set AFX_VST3_PLUGIN (a VST3 path) and AFX_VST3_PARAM (one of its parameters); "
                           "no VST3 plugin ships with this project")
def test_vst3_plugin_processes_deterministically():
    e = Vst3Effect("plugin", PLUGIN, [{"name": PARAM, "minimum": 0.0, "maximum": 1.0}])
    x = probe_signal(44100, 0.5)
    y1 = e.process(x, 44100, np.array([0.3]))
    y2 = e.process(x, 44100, np.array([0.3]))
    assert y1.shape == x.shape and np.array_equal(y1, y2)
