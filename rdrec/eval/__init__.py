"""Shared evaluator: ranking metrics and the protocols every strategy is scored under (docs/protocol.md)."""

from rdrec.eval.protocols import CandidateRanking, FullRanking, RankingProtocol, Scored, Scorer
from rdrec.eval.ranking import DEFAULT_KS, RankingMetrics, metrics_from_ranks, pessimistic_rank

__all__ = [
    "DEFAULT_KS",
    "CandidateRanking",
    "FullRanking",
    "RankingMetrics",
    "RankingProtocol",
    "Scored",
    "Scorer",
    "metrics_from_ranks",
    "pessimistic_rank",
]
