"""lfmim-edge: real-time multimodal emotion recognition (LFMIM) on the edge."""

__version__ = "0.1.0"
