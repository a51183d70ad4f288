"""charlstm: character-level LSTM language models with hand-derived backprop in NumPy."""

from .config import ModelConfig
from .model import CharLSTM

__version__ = "0.1.0"
__all__ = ["CharLSTM", "ModelConfig", "__version__"]
