"""SDRRL: self-distillation from the central language (config, transfer set, translators, the method)."""

from lensml.methods.sdrrl.config import SDRRLConfig
from lensml.methods.sdrrl.method import SDRRLMethod

__all__ = ["SDRRLConfig", "SDRRLMethod"]
