"""deepfake-detect: an experiment framework for detecting spoofed (AI-generated) speech."""

from deepfake_detect.config import register_resolvers

register_resolvers()
