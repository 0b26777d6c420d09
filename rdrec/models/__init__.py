"""Plain nn.Module recommenders (no Lightning, Hydra or files)."""

from rdrec.models.base import SequentialRecommender
from rdrec.models.bert4rec import BERT4Rec
from rdrec.models.caser import Caser
from rdrec.models.gru4rec import GRU4Rec
from rdrec.models.sasrec import SASRec
from rdrec.models.srgnn import SRGNN

__all__ = ["SequentialRecommender", "SASRec", "GRU4Rec", "Caser", "BERT4Rec", "SRGNN"]
