"""The built-in effects. Ranges are ours (documented in docs/effects.md); peq4 follows the one-shot EQ paper's
four-band layout and peq_comp DeepAFx-ST's six-band EQ followed by a compressor."""

from __future__ import annotations

import pedalboard as pb

from bench.effects import Effect, ParamSpec, register_effect


def _nyq(freq: float, sample_rate: int) -> float:
    """Keep filter frequencies below 0.45 x the sample rate, whatever rate the harness runs at."""
    return min(freq, 0.45 * sample_rate)


def _band(prefix: str, fmin: float, fmax: float, qmin: float, qmax: float, gain: float = 12.0) -> list[ParamSpec]:
    return [
        ParamSpec(f"{prefix}_gain_db", -gain, gain, "linear", "dB", 0.0),
        ParamSpec(f"{prefix}_freq_hz", fmin, fmax, "log", "Hz"),
        ParamSpec(f"{prefix}_q", qmin, qmax, "log", ""),
    ]


def _eq_plugins(v: dict[str, float], bands: list[tuple[str, type]], sample_rate: int) -> list:
    return [
        cls(cutoff_frequency_hz=_nyq(v[f"{b}_freq_hz"], sample_rate), gain_db=v[f"{b}_gain_db"], q=v[f"{b}_q"])
        for b, cls in bands
    ]


PEQ4_BANDS = [("low_shelf", pb.LowShelfFilter), ("peak1", pb.PeakFilter), ("peak2", pb.PeakFilter),
              ("high_shelf", pb.HighShelfFilter)]


@register_effect("peq4")
class PEQ4(Effect):
    """Four-band parametric EQ (low shelf, two peaks, high shelf), as in Mimilakis et al. 2020."""

    name = "peq4"
    params = (
        _band("low_shelf", 30, 300, 0.5, 1.0)
        + _band("peak1", 150, 2000, 0.5, 4.0)
        + _band("peak2", 1000, 8000, 0.5, 4.0)
        + _band("high_shelf", 2000, 10000, 0.5, 1.0)
    )

    def board(self, v, sample_rate):
        return pb.Pedalboard(_eq_plugins(v, PEQ4_BANDS, sample_rate))


PEQ6_BANDS = [("low_shelf", pb.LowShelfFilter), ("band1", pb.PeakFilter), ("band2", pb.PeakFilter),
              ("band3", pb.PeakFilter), ("band4", pb.PeakFilter), ("high_shelf", pb.HighShelfFilter)]

COMPRESSOR_PARAMS = [
    ParamSpec("threshold_db", -50.0, 0.0, "linear", "dB", 0.0),
    ParamSpec("ratio", 1.5, 20.0, "log", ":1"),
    ParamSpec("attack_ms", 0.5, 100.0, "log", "ms"),
    ParamSpec("release_ms", 10.0, 1000.0, "log", "ms"),
    ParamSpec("makeup_db", 0.0, 18.0, "linear", "dB", 0.0),
]


def _compressor_plugins(v: dict[str, float]) -> list:
    return [
        pb.Compressor(threshold_db=v["threshold_db"], ratio=v["ratio"], attack_ms=v["attack_ms"],
                      release_ms=v["release_ms"]),
        pb.Gain(gain_db=v["makeup_db"]),
    ]


@register_effect("peq_comp")
class PEQComp(Effect):
    """DeepAFx-ST's processing: six-band parametric EQ followed by a compressor with make-up gain."""

    name = "peq_comp"
    params = (
        _band("low_shelf", 20, 200, 0.5, 1.0)
        + _band("band1", 200, 2000, 0.5, 6.0)
        + _band("band2", 800, 4000, 0.5, 6.0)
        + _band("band3", 2000, 8000, 0.5, 6.0)
        + _band("band4", 4000, 10000, 0.5, 6.0)
        + _band("high_shelf", 4000, 10000, 0.5, 1.0)
        + COMPRESSOR_PARAMS
    )

    def board(self, v, sample_rate):
        return pb.Pedalboard(_eq_plugins(v, PEQ6_BANDS, sample_rate) + _compressor_plugins(v))


@register_effect("compressor")
class CompressorEffect(Effect):
    """Feed-forward compressor with make-up gain."""

    name = "compressor"
    params = COMPRESSOR_PARAMS

    def board(self, v, sample_rate):
        return pb.Pedalboard(_compressor_plugins(v))


@register_effect("distortion")
class DistortionEffect(Effect):
    """tanh waveshaper with input drive, a tone low-pass after it and output level."""

    name = "distortion"
    params = [
        ParamSpec("drive_db", 0.0, 40.0, "linear", "dB"),
        ParamSpec("tone_hz", 1000.0, 10000.0, "log", "Hz"),
        ParamSpec("level_db", -18.0, 0.0, "linear", "dB"),
    ]

    def board(self, v, sample_rate):
        return pb.Pedalboard([
            pb.Distortion(drive_db=v["drive_db"]),
            pb.LowpassFilter(cutoff_frequency_hz=_nyq(v["tone_hz"], sample_rate)),
            pb.Gain(gain_db=v["level_db"]),
        ])


@register_effect("delay")
class DelayEffect(Effect):
    name = "delay"
    params = [
        ParamSpec("delay_s", 0.05, 0.5, "log", "s"),
        ParamSpec("feedback", 0.0, 0.7, "linear", ""),
        ParamSpec("mix", 0.1, 0.6, "linear", ""),
    ]

    def board(self, v, sample_rate):
        return pb.Pedalboard([pb.Delay(delay_seconds=v["delay_s"], feedback=v["feedback"], mix=v["mix"])])


@register_effect("reverb")
class ReverbEffect(Effect):
    """Freeverb-style algorithmic reverb."""

    name = "reverb"
    params = [
        ParamSpec("room_size", 0.05, 1.0, "linear", ""),
        ParamSpec("damping", 0.0, 1.0, "linear", ""),
        ParamSpec("wet_level", 0.05, 0.6, "linear", ""),
        ParamSpec("dry_level", 0.3, 1.0, "linear", ""),
        ParamSpec("width", 0.0, 1.0, "linear", ""),
    ]

    def board(self, v, sample_rate):
        return pb.Pedalboard([pb.Reverb(room_size=v["room_size"], damping=v["damping"], wet_level=v["wet_level"],
                                        dry_level=v["dry_level"], width=v["width"])])


@register_effect("chorus")
class ChorusEffect(Effect):
    name = "chorus"
    params = [
        ParamSpec("rate_hz", 0.1, 5.0, "log", "Hz"),
        ParamSpec("depth", 0.05, 1.0, "linear", ""),
        ParamSpec("centre_delay_ms", 1.0, 20.0, "log", "ms"),
        ParamSpec("feedback", 0.0, 0.7, "linear", ""),
        ParamSpec("mix", 0.2, 0.9, "linear", ""),
    ]

    def board(self, v, sample_rate):
        return pb.Pedalboard([pb.Chorus(rate_hz=v["rate_hz"], depth=v["depth"], centre_delay_ms=v["centre_delay_ms"],
                                        feedback=v["feedback"], mix=v["mix"])])


@register_effect("phaser")
class PhaserEffect(Effect):
    name = "phaser"
    params = [
        ParamSpec("rate_hz", 0.1, 5.0, "log", "Hz"),
        ParamSpec("depth", 0.1, 1.0, "linear", ""),
        ParamSpec("centre_freq_hz", 200.0, 4000.0, "log", "Hz"),
        ParamSpec("feedback", 0.0, 0.8, "linear", ""),
        ParamSpec("mix", 0.2, 0.9, "linear", ""),
    ]

    def board(self, v, sample_rate):
        return pb.Pedalboard([pb.Phaser(rate_hz=v["rate_hz"], depth=v["depth"], centre_frequency_hz=v["centre_freq_hz"],
                                        feedback=v["feedback"], mix=v["mix"])])


@register_effect("bitcrush")
class BitcrushEffect(Effect):
    name = "bitcrush"
    params = [ParamSpec("bit_depth", 3.0, 12.0, "linear", "bits")]

    def board(self, v, sample_rate):
        return pb.Pedalboard([pb.Bitcrush(bit_depth=v["bit_depth"])])


@register_effect("ladder_filter")
class LadderFilterEffect(Effect):
    """Moog-style 24 dB/oct low-pass ladder filter with resonance and drive."""

    name = "ladder_filter"
    params = [
        ParamSpec("cutoff_hz", 200.0, 8000.0, "log", "Hz"),
        ParamSpec("resonance", 0.0, 0.9, "linear", ""),
        ParamSpec("drive", 1.0, 4.0, "log", ""),
    ]

    def board(self, v, sample_rate):
        return pb.Pedalboard([pb.LadderFilter(mode=pb.LadderFilter.Mode.LPF24, cutoff_hz=_nyq(v["cutoff_hz"], sample_rate),
                                              resonance=v["resonance"], drive=v["drive"])])


@register_effect("gain")
class GainEffect(Effect):
    """A plain gain: the simplest effect with a known answer (used by tests and as a sanity task)."""

    name = "gain"
    params = [ParamSpec("gain_db", -12.0, 12.0, "linear", "dB", 0.0)]

    def board(self, v, sample_rate):
        return pb.Pedalboard([pb.Gain(gain_db=v["gain_db"])])
