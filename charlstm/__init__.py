"""charlstm: character-level LSTM language models with hand-derived backprop in NumPy.

    model = charlstm.load("runs/demo")          # a run directory or a checkpoint
    print(model.generate("ROMEO:", length=200, temperature=0.8, seed=1))
"""

__version__ = "0.1.0"

from .checkpoint import CheckpointError  # noqa: E402
from .config import ModelConfig  # noqa: E402 (checkpoint reads __version__ from here)
from .engine import get_num_threads, set_num_threads  # noqa: E402
from .language_model import LanguageModel, load  # noqa: E402
from .model import CharLSTM  # noqa: E402

__all__ = ["CharLSTM", "CheckpointError", "LanguageModel", "ModelConfig", "__version__",
           "get_num_threads", "load", "set_num_threads"]
