"""Ensembles of experts: escalation cascades, votes and their trained scores.

- ``votes``: majority and weighted votes over extracted answers, ties made explicit.
- ``features``: the agreement features of a tier of experts.
- ``scorers``: the trained parts, numpy at prediction time, saved as JSON
  (:class:`LogisticScorer`, :class:`CascadeModel`, :class:`LearnedVote`).
- ``training``: fitting them from a correctness table and an answers table (numpy only,
  every choice made out-of-fold on the training rows).

Example:
    >>> from langchain_herd.ensembles import majority_vote
    >>> majority_vote(["A", "A", None]).winner
    'A'
"""

from langchain_herd.ensembles.features import letter_agreement, tier_feature_names, tier_features
from langchain_herd.ensembles.scorers import (
    CascadeModel,
    LearnedVote,
    LogisticScorer,
    load_ensemble_artifact,
)
from langchain_herd.ensembles.votes import VoteResult, majority_vote, weighted_vote

__all__ = [
    "CascadeModel",
    "LearnedVote",
    "LogisticScorer",
    "VoteResult",
    "letter_agreement",
    "load_ensemble_artifact",
    "majority_vote",
    "tier_feature_names",
    "tier_features",
    "weighted_vote",
]
