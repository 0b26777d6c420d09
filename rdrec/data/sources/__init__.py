"""Readers from published dataset layouts into the canonical form (one module per source)."""

from rdrec.data.sources.amazon_p5 import AmazonP5
from rdrec.data.sources.amazon_raw import AmazonReviews
from rdrec.data.sources.base import Source
from rdrec.data.sources.movielens import MovieLens100K
from rdrec.data.sources.recbole_atomic import RecBoleDataset, read_atomic
from rdrec.data.sources.steam import SteamLLaRA, SteamSASRec
from rdrec.data.sources.synthetic import Synthetic

__all__ = [
    "AmazonP5",
    "AmazonReviews",
    "MovieLens100K",
    "RecBoleDataset",
    "Source",
    "SteamLLaRA",
    "SteamSASRec",
    "Synthetic",
    "read_atomic",
]
