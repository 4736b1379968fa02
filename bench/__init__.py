"""afx-bench: a benchmark harness for audio-effect style transfer."""

__version__ = "0.1.0"
