"""charlstm: character-level LSTM language models with hand-derived backprop in NumPy.

    model = charlstm.load("runs/demo")          # a run directory or a checkpoint
    print(model.generate("ROMEO:", length=200, temperature=0.8, seed=1))
    model = charlstm.train(data="input.txt", preset="small", time_budget=3)
"""

from ._version import __version__
from .checkpoint import CheckpointError
from .config import ModelConfig
from .language_model import LanguageModel, load
from .library import train
from .network import CharLSTM
from .pool import get_num_threads, set_num_threads

__all__ = ["CharLSTM", "CheckpointError", "LanguageModel", "ModelConfig", "__version__",
           "get_num_threads", "load", "set_num_threads", "train"]
